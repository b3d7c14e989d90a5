"""Hedged requests: a model that has not started answering is asked again beside the first
request, and the reply streams from whichever answers first. Over real HTTP to the fake server.
"""

from __future__ import annotations

import threading
import time

import pytest

from bot.providers.hedge import HedgeBudget, HedgedProvider
from bot.types import ProviderError, TextDelta
from tests.bot.test_openai_provider import REPLY, REQUEST, collect, provider
from tests.fixtures_fake_llm import FakeLLMServer


def hedged(fake_llm: FakeLLMServer, after_s: float = 0.3, **options: object) -> HedgedProvider:
    return HedgedProvider(provider(fake_llm, read_timeout=2), after_s=after_s, **options)  # type: ignore[arg-type]


def outcomes(fake_llm: FakeLLMServer, expected: int, timeout: float = 5) -> list[str | None]:
    """Each request's outcome, once the server has settled `expected` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r["outcome"] for r in fake_llm.requests()]
        if sum(o is not None for o in found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_it_answers_from_a_second_request_when_the_first_stalls(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30)

    started = time.monotonic()
    deltas, finished = collect(hedged(fake_llm).stream(REQUEST))
    elapsed = time.monotonic() - started

    assert "".join(deltas) == REPLY
    assert len(finished) == 1
    assert 0.3 <= elapsed < 1.5, "answered after the hedge delay, not the 2 s read timeout"
    # The stalled request is closed once the other has answered, not left to its timeout.
    assert outcomes(fake_llm, 2) == ["client_gone", "complete"]


def test_it_answers_after_two_stalls_in_a_row(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30, times=2)

    started = time.monotonic()
    deltas, _ = collect(hedged(fake_llm).stream(REQUEST))
    elapsed = time.monotonic() - started

    assert "".join(deltas) == REPLY
    assert 0.6 <= elapsed < 1.8
    assert outcomes(fake_llm, 3) == ["client_gone", "client_gone", "complete"]


def test_it_sends_one_request_to_a_model_that_answers_in_time(fake_llm: FakeLLMServer) -> None:
    deltas, _ = collect(hedged(fake_llm).stream(REQUEST))

    assert "".join(deltas) == REPLY
    time.sleep(0.5)  # past the hedge delay: nothing more is sent
    assert outcomes(fake_llm, 1) == ["complete"]


def test_it_keeps_the_first_request_of_a_slow_model_that_does_answer(
    fake_llm: FakeLLMServer,
) -> None:
    # Both requests are slow (0.6 s before the first token); the first one answers first. The
    # second's reply takes a second to write, so closing it at its first token always wins.
    fake_llm.set_fault("hang", hang_s=0.6, times=2)
    fake_llm.script(list(REPLY), ["word "] * 400)

    deltas, _ = collect(hedged(fake_llm, max_requests=2).stream(REQUEST))

    assert "".join(deltas) == REPLY
    assert outcomes(fake_llm, 2) == ["complete", "client_gone"]


def test_a_request_that_answers_while_the_winner_still_streams_is_closed_at_once(
    fake_llm: FakeLLMServer,
) -> None:
    # The first request answers at 0.6 s and streams for 1.25 s; the hedge sent at 0.3 s
    # answers at 0.9 s, in the middle of it. Each reply takes 1.25 s to write (500 tokens at
    # 400/s, within the request's max_tokens).
    fake_llm.set_fault("hang", hang_s=0.6, times=2)
    winners_reply = ["first "] * 500
    fake_llm.script(winners_reply, ["second "] * 500)

    started = time.monotonic()
    deltas: list[str] = []
    mid_reply: list[str | None] = []
    for event in hedged(fake_llm, max_requests=2).stream(REQUEST):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        if not mid_reply and time.monotonic() - started >= 1.3:
            mid_reply = [r["outcome"] for r in fake_llm.requests()]

    assert "".join(deltas) == "".join(winners_reply)
    assert time.monotonic() - started >= 1.7, "the winner was still streaming at 1.3 s"
    # 0.4 s after the hedge answered, it is closed, nearly a second before it would end.
    assert mid_reply == [None, "client_gone"]


def test_it_raises_a_timeout_when_every_request_stalls(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30, times=-1)

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        collect(hedged(fake_llm, max_requests=2).stream(REQUEST))

    assert caught.value.code == "timeout"
    assert 1.9 <= time.monotonic() - started < 3, "the first request's 2 s read timeout"
    assert len(fake_llm.requests()) == 2


def test_it_ends_the_attempt_at_the_first_error_for_the_retry_policy_to_pace(
    fake_llm: FakeLLMServer,
) -> None:
    # The first request stalls; the hedge sent at 0.6 s gets a 500. (At 0.3 s, a busy machine
    # sent the hedge before the 500 was armed, once in a CI run.)
    fake_llm.set_fault("hang", hang_s=30)
    events = hedged(fake_llm, after_s=0.6).stream(REQUEST)

    def arm_500_once_the_first_request_arrived() -> None:
        while not fake_llm.requests():
            time.sleep(0.01)
        fake_llm.set_fault("500")

    arming = threading.Thread(target=arm_500_once_the_first_request_arrived)
    arming.start()
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        next(events)
    arming.join()

    assert caught.value.code == "server_error"
    assert time.monotonic() - started < 1.5, "not the stalled request's 2 s read timeout"
    assert len(fake_llm.requests()) == 2


def test_it_stops_hedging_when_the_budget_is_spent(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30, times=-1)
    model = HedgedProvider(
        provider(fake_llm, read_timeout=0.5), after_s=0.2, budget=HedgeBudget(ratio=0.0, burst=1.0)
    )

    for _ in range(2):
        with pytest.raises(ProviderError):
            collect(model.stream(REQUEST))

    # The first reply hedged once (the budget's one token); the second could not.
    assert len(fake_llm.requests()) == 3


def test_it_never_hedges_a_model_whose_usual_first_token_is_later_than_the_delay(
    fake_llm: FakeLLMServer,
) -> None:
    model = hedged(fake_llm, after_s=0.1)
    for _ in range(10):
        model.first_token_times.add(0.4)

    assert model.hedge_delay() == pytest.approx(0.8)


def test_it_can_be_turned_off(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30)

    with pytest.raises(ProviderError) as caught:
        collect(hedged(fake_llm, after_s=0).stream(REQUEST))

    assert caught.value.code == "timeout"
    assert len(fake_llm.requests()) == 1


def test_it_closes_every_request_when_the_reply_is_stopped_early(
    fake_llm: FakeLLMServer,
) -> None:
    fake_llm.set_fault("hang", hang_s=30)
    # Replies long enough (~1 s at the fake's pace) to still be streaming when the reply is
    # stopped, however busy the machine: a short one can end first and count as complete.
    long_reply = [f"word{i} " for i in range(400)]
    fake_llm.script(long_reply, long_reply)
    events = hedged(fake_llm).stream(REQUEST)

    first = next(events)
    events.close()  # a customer who left, a reply taken over

    assert first.text == long_reply[0]  # type: ignore[union-attr]
    assert outcomes(fake_llm, 2) == ["client_gone", "client_gone"]
