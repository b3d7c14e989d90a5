"""The model's budget: requests and tokens a minute shared through the real Redis by every
worker, so a burst waits for its turn (first come, first served) instead of drawing 429s from
the provider. The provider is the fake server over real HTTP, enforcing the same limits."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from bot.providers import budget as budget_module
from bot.providers.budget import BudgetedProvider, Limits, ModelBudget, resolve
from bot.providers.hedge import HedgedProvider
from bot.types import (
    BudgetWait,
    ChatMessage,
    ModelLimits,
    PlaceInLine,
    ProviderError,
    ReplyRequest,
)
from support_bot.redis_clients import sync_client
from tests.bot.test_openai_provider import MODEL, REQUEST, collect, provider
from tests.fixtures_fake_llm import FakeLLMServer


def worker(
    fake_llm: FakeLLMServer, *, api_key: str = "test-key", hedge_after_s: float = 0.0
) -> BudgetedProvider:
    """The provider as one worker process builds it: objects of its own, the budget shared
    with the other workers only through Redis."""
    budget = ModelBudget("openai", base_url=fake_llm.base_url, api_key=api_key, model=MODEL)
    model = provider(fake_llm, api_key=api_key)
    hedged = HedgedProvider(model, after_s=hedge_after_s, admit_hedge=budget.admit_now)
    return BudgetedProvider(hedged, budget)


def drain(budget: ModelBudget, request: ReplyRequest = REQUEST) -> int:
    """Book every turn that is free now, as a burst before would have: the next waits."""
    booked = 0
    while budget.admit_now(request):
        booked += 1
        assert booked < 10_000, "the budget never ran out"
    return booked


def asking(text: str, **fields: object) -> ReplyRequest:
    return dataclasses.replace(
        REQUEST, messages=[*REQUEST.messages[:-1], ChatMessage("user", text)], **fields
    )


def arrivals(fake_llm: FakeLLMServer) -> list[tuple[str, float, str | None]]:
    """(the customer's question, arrival time, outcome) of each request the server got."""
    return [
        (r["body"]["messages"][-1]["content"], r["arrived_at"], r["outcome"])
        for r in fake_llm.requests()
    ]


def in_arrival_order(fake_llm: FakeLLMServer) -> list[tuple[str, float, str | None]]:
    return sorted(arrivals(fake_llm), key=lambda a: a[1])


def questions_in_arrival_order(fake_llm: FakeLLMServer) -> list[str]:
    return [question for question, _at, _outcome in in_arrival_order(fake_llm)]


def run_in_threads(jobs: list[Callable[[], object]], stagger_s: float = 0.0) -> list[object]:
    """Run each job in a thread of its own, started `stagger_s` apart; their results or errors."""
    results: list[object] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
        time.sleep(stagger_s)
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_burst_from_two_workers_waits_for_its_turn_instead_of_drawing_429s(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    fake_llm.set_budget(requests_per_min=60)
    workers = [worker(fake_llm), worker(fake_llm)]
    questions = iter(range(64))
    lock = threading.Lock()

    def thread_of(p: BudgetedProvider) -> Callable[[], int]:
        def ask_until_none_left() -> int:
            answered = 0
            while True:
                with lock:
                    i = next(questions, None)
                if i is None:
                    return answered
                collect(p.stream(asking(f"question {i}")))
                answered += 1

        return ask_until_none_left

    started = time.monotonic()
    results = run_in_threads([thread_of(p) for p in workers for _ in range(8)])
    elapsed = time.monotonic() - started

    assert not [r for r in results if isinstance(r, Exception)]
    assert sum(r for r in results if isinstance(r, int)) == 64
    seen = arrivals(fake_llm)
    assert [outcome for _q, _at, outcome in seen] == ["complete"] * 64, "no 429, no retry"
    # 59 went at once (a minute's budget, less a second in hand); the others one a second.
    times = sorted(at for _q, at, _o in seen)
    assert elapsed >= 4.5
    # The turns are a second apart; a request reaches the server a little after its turn, by
    # however long a loaded machine takes to send it, so one gap may shrink, not their sum.
    assert times[-1] - times[-5] >= 3.5
    assert all(b - a >= 0.5 for a, b in zip(times[-5:-1], times[-4:], strict=True))


def test_turns_go_in_the_order_they_were_asked_for(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 240  # one every 0.25 s once the minute's budget is spent
    drain(worker(fake_llm).budget)
    drained = time.time()  # the drain took every turn free until now: the next is later
    # Six workers ask 20 ms apart; each turn comes 0.25 s after the one before.
    jobs = [
        (lambda i=i: collect(worker(fake_llm).stream(asking(f"question {i}")))) for i in range(6)
    ]

    results = run_in_threads(jobs, stagger_s=0.02)

    assert not [r for r in results if isinstance(r, Exception)]
    seen = in_arrival_order(fake_llm)
    assert [q for q, _at, _o in seen] == [f"question {i}" for i in range(6)]
    # None goes before its turn. A busy machine may send one late, close behind the one before
    # it (the provider counts a minute, not a gap), but never early.
    early = [
        (i, round(at - drained, 3))
        for i, (_q, at, _o) in enumerate(seen)
        if at - drained < 0.25 * i
    ]
    assert not early, f"went before their turns (index, seconds after the drain): {early}"


@pytest.mark.parametrize("tokens_per_min", [0, 1_000_000])  # no token limit; one not binding
def test_the_customer_who_asked_first_goes_first_however_late_their_prompt_is_ready(
    fake_llm: FakeLLMServer, settings, tokens_per_min: int
) -> None:
    settings.OPENAI_TOKENS_PER_MIN = tokens_per_min
    settings.OPENAI_REQUESTS_PER_MIN = 60  # the next turns are 1 s and 2 s away
    drain(worker(fake_llm).budget)
    asked = time.time()

    def ask(text: str, asked_at: float) -> Callable[[], object]:
        request = asking(text, budget_wait=BudgetWait(asked_at=asked_at))
        return lambda: collect(worker(fake_llm).stream(request))

    # The second customer's prompt is ready first (retrieval under a burst finishes in any
    # order): the first customer's request, booked 50 ms later, still takes the earlier turn.
    results = run_in_threads(
        [ask("asked second", asked + 0.2), ask("asked first", asked + 0.1)], stagger_s=0.05
    )

    assert not [r for r in results if isinstance(r, Exception)]
    assert questions_in_arrival_order(fake_llm) == ["asked first", "asked second"]


def test_a_requests_tokens_count_up_front_with_its_max_tokens(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_TOKENS_PER_MIN = 60_000
    fake_llm.set_budget(tokens_per_min=60_000)
    p = worker(fake_llm)

    collect(p.stream(dataclasses.replace(REQUEST, max_tokens=30_000)))
    started = time.monotonic()
    collect(p.stream(dataclasses.replace(REQUEST, max_tokens=30_500)))
    waited = time.monotonic() - started

    # Together they ask more than a minute holds: the second waits until enough has refilled.
    assert 1.0 <= waited < 3
    assert [outcome for _q, _at, outcome in arrivals(fake_llm)] == ["complete", "complete"]


def test_a_429_pushes_the_budget_back_for_every_worker(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 600
    fake_llm.set_fault("429", retry_after="2")

    with pytest.raises(ProviderError) as refused:
        collect(worker(fake_llm).stream(REQUEST))
    assert refused.value.code == "rate_limited"
    collect(worker(fake_llm).stream(REQUEST))  # another worker, right after

    (_q, refused_at, first), (_q2, next_at, second) = arrivals(fake_llm)
    assert (first, second) == ("429", "complete")
    assert next_at - refused_at >= 1.9, "the other worker waited out the Retry-After"


def test_a_push_back_delays_the_requests_already_waiting_in_their_order(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60  # a turn every second once the budget is spent
    budget = worker(fake_llm).budget
    drain(budget)
    jobs = [
        (lambda i=i: collect(worker(fake_llm).stream(asking(f"question {i}")))) for i in range(2)
    ]
    pushing = threading.Timer(0.2, lambda: budget.push_back(REQUEST, resolve(REQUEST.limits), 2.0))
    pushing.start()
    started = time.time()

    results = run_in_threads(jobs, stagger_s=0.02)

    assert not [r for r in results if isinstance(r, Exception)]
    seen = in_arrival_order(fake_llm)
    assert [q for q, _at, _o in seen] == ["question 0", "question 1"]
    # Their turns were at +1 s and +2 s: the 2 s pause moved both, in the same order.
    assert seen[0][1] - started >= 2.0
    assert seen[1][1] - seen[0][1] >= 0.75  # a second apart, less a busy machine's wake-ups


def test_a_request_waiting_for_its_turn_is_not_hedged(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    p = worker(fake_llm, hedge_after_s=0.3)
    drain(p.budget)

    started = time.monotonic()
    deltas, _ = collect(p.stream(REQUEST))

    assert deltas and time.monotonic() - started >= 0.9  # it waited a turn, well past 0.3 s
    time.sleep(0.3)
    assert len(fake_llm.requests()) == 1, "the wait was no silence of the model's"


def test_a_hedge_goes_only_when_the_budget_has_a_turn_for_it_at_once(
    fake_llm: FakeLLMServer, settings
) -> None:
    # A turn every 2 s: the one after the request's comes about a second after the last hedge
    # check (0.9 s in), so a busy machine's late wake-ups cannot hand the hedge a turn (at 60 a
    # minute it came 50 ms after that check).
    settings.OPENAI_REQUESTS_PER_MIN = 30
    p = worker(fake_llm, hedge_after_s=0.3)
    drain(p.budget)
    time.sleep(1.05)  # one turn has come free (the second in hand): the request's; none for a hedge
    fake_llm.set_fault("hang", hang_s=1.0)

    deltas, _ = collect(p.stream(REQUEST))

    assert deltas
    assert len(fake_llm.requests()) == 1


def test_each_account_and_model_has_a_budget_of_its_own(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    spent = worker(fake_llm, api_key="sk-first-account")
    drain(spent.budget)

    assert not spent.budget.admit_now(REQUEST)
    assert worker(fake_llm, api_key="sk-second-account").budget.admit_now(REQUEST)
    assert spent.budget.admit_now(dataclasses.replace(REQUEST, model="another-model"))
    elsewhere = ModelBudget(
        "openai", base_url="http://127.0.0.1:1/v1", api_key="sk-first-account", model=MODEL
    )
    assert elsewhere.admit_now(REQUEST)
    # The key is in no Redis key, only a hash of it.
    keys = list(sync_client().scan_iter(match="*model-budget*"))
    assert len(keys) == 4  # nobody waits: no queue
    assert not [k for k in keys if "account" in k]


def test_a_prompt_versions_limits_win_over_the_environments(settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    settings.OPENAI_TOKENS_PER_MIN = 10_000

    assert resolve(ModelLimits()) == Limits(60, 10_000)
    assert resolve(ModelLimits(requests_per_min=500)) == Limits(500, 10_000)
    assert resolve(ModelLimits(requests_per_min=0, tokens_per_min=0)) == Limits(0, 0)
    assert not resolve(ModelLimits(0, 0)).limited


def test_a_turn_past_the_deadline_is_refused_at_once_and_not_booked(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    p = worker(fake_llm)
    drain(p.budget)
    hurried = dataclasses.replace(REQUEST, budget_wait=BudgetWait(deadline=time.monotonic() + 0.5))

    started = time.monotonic()
    with pytest.raises(ProviderError) as refused:
        collect(p.stream(hurried))

    assert refused.value.code == "over_budget" and refused.value.permanent
    assert time.monotonic() - started < 0.3, "refused without waiting for nothing"
    assert fake_llm.requests() == []
    # Nothing was booked: the next turn is still a second away, not two.
    started = time.monotonic()
    collect(p.stream(REQUEST))
    assert time.monotonic() - started < 1.5


def test_a_caller_that_stops_waiting_sends_nothing(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    p = worker(fake_llm)
    drain(p.budget)
    p.budget.push_back(REQUEST, resolve(REQUEST.limits), 5.0)
    lost = threading.Event()
    threading.Timer(0.3, lost.set).start()

    patient = dataclasses.replace(REQUEST, budget_wait=BudgetWait(cancelled=lost.is_set))

    started = time.monotonic()
    with pytest.raises(ProviderError) as stopped:
        collect(p.stream(patient))

    assert stopped.value.code == "cancelled"
    assert time.monotonic() - started < 1.2
    assert fake_llm.requests() == []


def test_a_long_wait_is_announced_once_and_a_short_one_not_at_all(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60
    p = worker(fake_llm)
    told: list[float] = []

    def request(notice_after_s: float) -> ReplyRequest:
        wait = BudgetWait(notice_at=time.monotonic() + notice_after_s, on_notice=told.append)
        return dataclasses.replace(REQUEST, budget_wait=wait)

    drain(p.budget)
    collect(p.stream(request(notice_after_s=2.0)))  # its turn came after about 1 s
    assert told == []

    drain(p.budget)
    p.budget.push_back(REQUEST, resolve(REQUEST.limits), 3.0)
    started = time.monotonic()
    collect(p.stream(request(notice_after_s=0.5)))
    assert len(told) == 1 and 2.0 <= told[0] <= 3.0  # told at 0.5 s, with what was left
    assert time.monotonic() - started >= 2.9


def in_line(ticket: str, asked_at: float) -> tuple[PlaceInLine, ReplyRequest]:
    """A customer's place in line, and their request once prepared, holding it."""
    place = PlaceInLine(ticket=ticket, asked_at=asked_at, model=MODEL, limits=REQUEST.limits)
    request = asking(
        f"question of {ticket}", budget_wait=BudgetWait(asked_at=asked_at, place=ticket)
    )
    return place, request


def test_while_the_budget_has_room_a_customer_still_being_prepared_goes_before_those_asked_after(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 600  # room for both at once
    asked = time.time()
    first, first_request = in_line("reply:1", asked)
    second, second_request = in_line("reply:2", asked + 0.1)
    first_worker, second_worker = worker(fake_llm), worker(fake_llm)

    with first_worker.in_line(first), second_worker.in_line(second):
        # The second customer's prompt is ready first.
        later = threading.Thread(target=lambda: collect(second_worker.stream(second_request)))
        later.start()
        time.sleep(0.5)
        assert fake_llm.requests() == [], "it waits for the customer who asked before"
        first_ready_at = time.time()
        collect(first_worker.stream(first_request))
        later.join(timeout=10)

    # Both turns are free at once, so both go as soon as the first is ready (which of the two
    # reaches the server first is then the network's to say, within milliseconds).
    went = {question: at for question, at, _outcome in arrivals(fake_llm)}
    assert went.keys() == {"question of reply:1", "question of reply:2"}
    assert went["question of reply:2"] >= first_ready_at


def test_a_place_left_without_booking_lets_those_behind_go_at_once(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 600
    asked = time.time()
    first, _never_sent = in_line("reply:1", asked)  # e.g. retrieval refused: no model needed
    second, second_request = in_line("reply:2", asked + 0.1)
    first_worker, second_worker = worker(fake_llm), worker(fake_llm)
    went_at: list[float] = []

    def ask_second() -> None:
        with second_worker.in_line(second):
            collect(second_worker.stream(second_request))
        went_at.append(time.monotonic())

    with first_worker.in_line(first):
        later = threading.Thread(target=ask_second)
        later.start()
        time.sleep(0.4)
        left_at = time.monotonic()
    later.join(timeout=10)

    assert went_at and went_at[0] - left_at < 1.0
    assert [q for q, _at, _o in arrivals(fake_llm)] == ["question of reply:2"]


def test_a_place_held_by_a_worker_that_died_is_given_up_after_a_while(
    fake_llm: FakeLLMServer, settings, monkeypatch
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 600
    monkeypatch.setattr(budget_module, "PLACE_HELD_S", 0.6)
    asked = time.time()
    dead, _never_sent = in_line("reply:1", asked)
    second, second_request = in_line("reply:2", asked + 0.1)
    dead_worker = worker(fake_llm).in_line(dead)
    dead_worker.__enter__()  # held, and never left: the worker died
    p = worker(fake_llm)

    started = time.monotonic()
    with p.in_line(second):
        collect(p.stream(second_request))

    assert 0.4 <= time.monotonic() - started < 3.0
    assert [q for q, _at, _o in arrivals(fake_llm)] == ["question of reply:2"]


def test_an_unmetered_model_keeps_no_places(fake_llm: FakeLLMServer, settings) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 0
    settings.OPENAI_TOKENS_PER_MIN = 0
    p = worker(fake_llm)
    place, request = in_line("reply:1", time.time())

    with p.in_line(place):
        assert not sync_client().keys("*model-budget*")
        collect(p.stream(request))


def test_a_request_that_waited_behind_an_earlier_customer_still_waits_for_its_own_turn(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 60  # spent: one turn a second from now on
    first_worker, second_worker = worker(fake_llm), worker(fake_llm)
    draining = time.time()  # the drain's first booking restarts the clock: turns at 1 s and 2 s
    drain(first_worker.budget)
    asked = time.time()
    first, first_request = in_line("reply:1", asked)
    second, second_request = in_line("reply:2", asked + 0.1)

    with first_worker.in_line(first), second_worker.in_line(second):
        later = threading.Thread(target=lambda: collect(second_worker.stream(second_request)))
        later.start()
        time.sleep(1.5)  # the second waits behind the first for longer than a turn
        collect(first_worker.stream(first_request))
        later.join(timeout=10)

    seen = in_arrival_order(fake_llm)
    assert [q for q, _at, _o in seen] == ["question of reply:1", "question of reply:2"]
    # The first went late (at 1.5 s, its turn was at 1 s); the second at its own turn, 2 s.
    assert seen[1][1] - draining >= 1.95, "not as soon as it booked"


class Line:
    """Customers holding places in line with one worker, asked 0.1 s apart, who book by hand
    (each with one booking id, as a request keeps its own while it waits)."""

    def __init__(self, p: BudgetedProvider, customers: int) -> None:
        asked = time.time()
        self.budget = p.budget
        self.places = [in_line(f"reply:{i}", asked + i / 10) for i in range(customers)]
        self.holds = [p.in_line(place) for place, _request in self.places]
        for hold in self.holds:
            hold.__enter__()

    def book(self, i: int) -> budget_module._Booking:
        request = self.places[i][1]
        wait = request.budget_wait
        assert wait is not None
        limits = resolve(REQUEST.limits)
        return self.budget._book(request, limits, 10, 60.0, wait.asked_at, wait.place, f"b{i}")

    def leave(self, i: int) -> None:
        self.holds[i].__exit__(None, None, None)


def test_customers_ready_to_book_do_not_wait_for_each_other_only_for_those_still_being_prepared(
    fake_llm: FakeLLMServer, settings
) -> None:
    settings.OPENAI_REQUESTS_PER_MIN = 600
    line = Line(worker(fake_llm), 3)

    # Both ready, behind the first, still being prepared.
    assert line.book(1).behind and line.book(2).behind
    line.leave(0)  # the first needed no model
    # The third books at once: the second is ready too, so nobody is waited for any more.
    assert not line.book(2).behind and not line.book(1).behind


def test_customers_ready_behind_an_earlier_one_take_the_free_turns_in_the_order_they_asked(
    fake_llm: FakeLLMServer, settings
) -> None:
    # Six requests a minute: five turns free at once, then one at 1 s and one at 11 s. Three
    # are spent, so two are free now.
    settings.OPENAI_REQUESTS_PER_MIN = 6
    p = worker(fake_llm)
    for _ in range(3):
        assert p.budget.admit_now(REQUEST)
    line = Line(p, 4)

    # The last three are ready, the last first, while the first is still being prepared.
    assert all(line.book(i).behind for i in (3, 2, 1))
    assert line.book(0).wait < 0.5  # the first goes at once
    # The last asks again first: it must not take the one turn still free now.
    last, second, third = line.book(3), line.book(1), line.book(2)
    assert all(b.booked for b in (last, second, third))
    assert second.wait < 0.5
    assert 0.5 < third.wait < 1.5
    assert 10.5 < last.wait < 11.5
