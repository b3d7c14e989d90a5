"""The fake model server's budget mode: an account's rate limits enforced as OpenAI does, with
real 429s, Retry-After and x-ratelimit-* headers, over real HTTP."""

from __future__ import annotations

import time

import httpx2
import pytest

from bot.types import ProviderError
from tests.bot.test_openai_provider import MESSAGES, REQUEST, collect, provider
from tests.fake_llm import estimate_prompt_tokens
from tests.fixtures_fake_llm import FakeLLMServer


def chat(fake_llm: FakeLLMServer, max_tokens: int = 20) -> httpx2.Response:
    return httpx2.post(
        f"{fake_llm.base_url}/chat/completions",
        headers={"Authorization": "Bearer test-key"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": max_tokens},
        timeout=10,
    )


def test_it_lets_a_minutes_requests_through_at_once_then_answers_429(fake_llm):
    fake_llm.set_budget(requests_per_min=5)

    answers = [chat(fake_llm) for _ in range(6)]

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    # One request refills every 12 s: that is how long to wait, both ways OpenAI says it.
    assert 10_000 < int(refused.headers["retry-after-ms"]) <= 12_000
    assert refused.headers["retry-after"] in ("11", "12")
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "4"
    assert [r["outcome"] for r in fake_llm.requests()] == ["complete"] * 5 + ["429"]
    assert fake_llm.requests()[-1]["budget"] == "requests"


def test_it_refills_the_budget_continuously(fake_llm):
    fake_llm.set_budget(requests_per_min=60)  # a bucket of 60, one more each second
    answered = 0
    started = time.monotonic()
    while (answer := chat(fake_llm, max_tokens=1)).status_code == 200:
        answered += 1
        assert answered < 200, "the budget was never enforced"
    # The minute's 60, and one more for each second these requests took going one by one.
    assert 60 <= answered <= 61 + (time.monotonic() - started)
    retry_after_s = int(answer.headers["retry-after-ms"]) / 1000
    assert 0 < retry_after_s <= 1

    time.sleep(retry_after_s + 0.05)  # not a minute: the bucket refills as time passes

    assert chat(fake_llm, max_tokens=1).status_code == 200


def test_it_counts_a_requests_prompt_and_max_tokens_against_the_token_budget(fake_llm):
    prompt = estimate_prompt_tokens(MESSAGES)
    fake_llm.set_budget(tokens_per_min=2 * (prompt + 1000))

    first = chat(fake_llm, max_tokens=1000)
    second = chat(fake_llm, max_tokens=1000)
    third = chat(fake_llm, max_tokens=1000)

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert third.json()["error"]["type"] == "tokens"
    assert first.headers["x-ratelimit-limit-tokens"] == str(2 * (prompt + 1000))
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == prompt + 1000


def test_the_real_client_sees_a_rate_limit_it_may_retry_after(fake_llm):
    fake_llm.set_budget(requests_per_min=1)
    collect(provider(fake_llm).stream(REQUEST))

    with pytest.raises(ProviderError) as refused:
        collect(provider(fake_llm).stream(REQUEST))

    assert refused.value.code == "rate_limited" and not refused.value.permanent
    assert refused.value.retry_after is not None and 55 < refused.value.retry_after <= 60


def test_a_reset_turns_the_budget_off(fake_llm):
    fake_llm.set_budget(requests_per_min=1)
    assert chat(fake_llm).status_code == 200
    assert chat(fake_llm).status_code == 429

    fake_llm.reset()

    assert chat(fake_llm).status_code == 200
    assert "x-ratelimit-limit-requests" not in chat(fake_llm).headers


@pytest.mark.parametrize(
    "body",
    [{"requests_per_min": -1}, {"requests_per_min": "100"}, {"tokens_per_min": 1.5}, {"rpm": 1}],
)
def test_a_budget_that_makes_no_sense_is_refused(fake_llm, body):
    answer = httpx2.post(f"{fake_llm.url}/_control/budget", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"]
