"""The fake OpenAI server speaks the real wire format, and the OpenAI provider maps what the real
`openai` client does with it (text, usage, every failure) onto the provider interface.

Everything goes over real HTTP to a real server process: no mocks.
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import Generator
from typing import Any

import httpx2
import openai
import pytest

from bot.providers.openai import OpenAIProvider
from bot.providers.transport import LeanTransport, lean_transport_for
from bot.types import ChatMessage, Finished, ProviderError, ReplyRequest, TextDelta
from tests.fake_llm import VOCABULARY, expected_reply
from tests.fixtures_fake_llm import (
    FAKE_LLM_REPLY_TOKENS,
    FAKE_LLM_TOKENS_PER_S,
    FAKE_LLM_TTFT_MS,
    FakeLLMServer,
    start_fake_llm,
)

MODEL = "gpt-4o-mini"
QUESTION = "Where is my order #1234?"
MESSAGES = [
    {"role": "system", "content": "You are a helpful support agent."},
    {"role": "user", "content": QUESTION},
]
REQUEST = ReplyRequest(messages=[ChatMessage(m["role"], m["content"]) for m in MESSAGES])  # type: ignore[arg-type]
REPLY = "".join(expected_reply(MESSAGES, FAKE_LLM_REPLY_TOKENS))


def provider(
    fake_llm: FakeLLMServer, api_key: str = "test-key", read_timeout: float = 5
) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=api_key,
        base_url=fake_llm.base_url,
        model=MODEL,
        connect_timeout=2,
        read_timeout=read_timeout,
    )


def collect(events: Any) -> tuple[list[str], list[Finished]]:
    deltas: list[str] = []
    finished: list[Finished] = []
    for event in events:
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            finished.append(event)
    return deltas, finished


def stream_until_error(
    p: OpenAIProvider, request: ReplyRequest = REQUEST
) -> tuple[list[str], ProviderError]:
    """Deltas yielded before the ProviderError, and the error."""
    deltas: list[str] = []
    with pytest.raises(ProviderError) as caught:
        for event in p.stream(request):
            assert isinstance(event, TextDelta), "no Finished on a failed stream"
            deltas.append(event.text)
    return deltas, caught.value


def raw_stream(fake_llm: FakeLLMServer, **body: Any) -> tuple[httpx2.Response, bytes]:
    payload = {"model": MODEL, "messages": MESSAGES, "stream": True, **body}
    with httpx2.stream(
        "POST",
        fake_llm.base_url + "/chat/completions",
        json=payload,
        headers={"authorization": "Bearer test-key"},
    ) as response:
        return response, response.read()


def sse_events(raw: bytes) -> list[str]:
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events), events
    return [e.removeprefix(b"data: ").decode() for e in events]


# --- The fake server's wire format ------------------------------------------------------------


def test_it_streams_the_exact_sse_wire_format_with_a_usage_chunk(fake_llm: FakeLLMServer) -> None:
    response, raw = raw_stream(fake_llm, stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b'"object":"chat.completion.chunk"' in raw  # compact JSON, as the real API sends
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    first, contents, finish, usage = chunks[0], chunks[1:-2], chunks[-2], chunks[-1]

    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"].startswith("chatcmpl-")
        for key in ("id", "created", "model", "system_fingerprint"):
            assert chunk[key] == first[key]
    assert first["model"] == MODEL
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [c["choices"][0]["delta"] for c in contents] == [
        {"content": t} for t in expected_reply(MESSAGES, FAKE_LLM_REPLY_TOKENS)
    ]
    assert all(c["choices"][0]["finish_reason"] is None for c in contents)
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == FAKE_LLM_REPLY_TOKENS
    assert usage["usage"]["prompt_tokens"] > 0
    assert usage["usage"]["total_tokens"] == (
        usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )


def test_it_leaves_usage_out_unless_asked(fake_llm: FakeLLMServer) -> None:
    _, raw = raw_stream(fake_llm)

    events = sse_events(raw)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(chunks) == 1 + FAKE_LLM_REPLY_TOKENS + 1


def test_it_waits_for_the_first_token_then_paces_the_rest(fake_llm: FakeLLMServer) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx2.stream(
        "POST",
        fake_llm.base_url + "/chat/completions",
        json=body,
        headers={"authorization": "Bearer k"},
    ) as response:
        for line in response.iter_lines():
            if '"delta":{"content":' in line:
                arrivals.append(time.monotonic())

    assert len(arrivals) == FAKE_LLM_REPLY_TOKENS
    assert arrivals[0] - started >= FAKE_LLM_TTFT_MS / 1000
    # Each token is due at a fixed time from the request's arrival, so a late first token is
    # followed by a catch-up burst: only the last token's time from the start is a sure bound.
    interval = 1 / FAKE_LLM_TOKENS_PER_S
    assert arrivals[-1] - started >= FAKE_LLM_TTFT_MS / 1000 + 19 * interval


def test_it_answers_without_streaming_and_lists_models(fake_llm: FakeLLMServer) -> None:
    client = openai.OpenAI(api_key="test-key", base_url=fake_llm.base_url, max_retries=0)

    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    models = client.models.list()

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == FAKE_LLM_REPLY_TOKENS
    assert MODEL in [m.id for m in models]


def test_it_stops_at_max_tokens_with_finish_reason_length(fake_llm: FakeLLMServer) -> None:
    client = openai.OpenAI(api_key="test-key", base_url=fake_llm.base_url, max_retries=0)

    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == "".join(expected_reply(MESSAGES, 5))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_it_records_requests_with_their_retry_count(fake_llm: FakeLLMServer) -> None:
    # retry-after-ms keeps the SDK's own backoff short: this test is about what gets recorded.
    fake_llm.set_fault("500", times=2, retry_after_ms="10")
    client = openai.OpenAI(api_key="test-key", base_url=fake_llm.base_url, max_retries=2)

    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == REPLY
    records = fake_llm.requests()
    assert [r["retry_count"] for r in records] == [0, 1, 2]
    assert [r["fault"] for r in records] == ["500", "500", None]
    assert [r["outcome"] for r in records] == ["500", "500", "complete"]
    assert records[0]["body"]["messages"] == MESSAGES
    assert records[0]["arrived_at"] <= records[1]["arrived_at"] <= records[2]["arrived_at"]


def test_it_rejects_an_unknown_fault(fake_llm: FakeLLMServer) -> None:
    response = httpx2.post(fake_llm.url + "/_control/faults", json={"fault": "explode"})

    assert response.status_code == 400
    assert "unknown fault" in response.json()["error"]["message"]


def test_a_fault_mix_draws_each_requests_fault_with_its_probability() -> None:
    from tests.fake_llm import Fault, State

    state = State()
    state.arm(Fault.from_json({"fault": "mix", "mix": {"429": 0.3, "cut": 0.2}, "seed": 7}))
    drawn = [fault.fault if (fault := state.take_fault()) else None for _ in range(2000)]

    shares = {name: drawn.count(name) / len(drawn) for name in ("429", "cut", None)}
    assert abs(shares["429"] - 0.3) < 0.05
    assert abs(shares["cut"] - 0.2) < 0.05
    assert abs(shares[None] - 0.5) < 0.05
    # The same seed draws the same faults again: a fault run can be repeated.
    state.arm(Fault.from_json({"fault": "mix", "mix": {"429": 0.3, "cut": 0.2}, "seed": 7}))
    again = [fault.fault if (fault := state.take_fault()) else None for _ in range(2000)]
    assert again == drawn


def test_a_fault_mix_over_http_applies_the_drawn_fault(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("mix", mix={"500": 1.0}, retry_after_ms="10")
    client = openai.OpenAI(api_key="test-key", base_url=fake_llm.base_url, max_retries=1)

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    assert [r["fault"] for r in fake_llm.requests()] == ["500", "500"]


@pytest.mark.parametrize(
    "mix", [{"explode": 0.5}, {"mix": 0.5}, {"429": 0.7, "500": 0.4}, {"429": -0.1}, {}]
)
def test_it_rejects_a_fault_mix_it_cannot_draw(fake_llm: FakeLLMServer, mix: dict) -> None:
    response = httpx2.post(fake_llm.url + "/_control/faults", json={"fault": "mix", "mix": mix})

    assert response.status_code == 400


# --- The provider: a reply -------------------------------------------------------------------


def test_it_yields_the_expected_reply_then_one_finished_with_usage(fake_llm: FakeLLMServer) -> None:
    deltas, finished = collect(provider(fake_llm).stream(REQUEST))

    assert "".join(deltas) == REPLY
    assert len(deltas) == FAKE_LLM_REPLY_TOKENS
    assert all(deltas)
    assert len(finished) == 1
    assert finished[0].model == MODEL
    assert finished[0].completion_tokens == FAKE_LLM_REPLY_TOKENS
    assert finished[0].prompt_tokens > 0
    sent = fake_llm.requests()[0]["body"]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == MESSAGES
    assert sent["max_tokens"] == REQUEST.max_tokens
    assert "stop" not in sent  # omitted when empty, not sent as []


def test_it_uses_the_requests_model_over_its_default(fake_llm: FakeLLMServer) -> None:
    request = ReplyRequest(messages=REQUEST.messages, model="fake-llm")

    _, finished = collect(provider(fake_llm).stream(request))

    assert finished[0].model == "fake-llm"
    assert fake_llm.requests()[0]["body"]["model"] == "fake-llm"


def test_it_stops_before_a_stop_sequence(fake_llm: FakeLLMServer) -> None:
    # A stop sequence that starts inside a token, taken from the middle of the reply.
    tokens = expected_reply(MESSAGES, FAKE_LLM_REPLY_TOKENS)
    stop = tokens[6][2:] + tokens[7]
    expected = REPLY[: REPLY.find(stop)]
    request = ReplyRequest(messages=REQUEST.messages, stop=["never appears", stop])

    deltas, finished = collect(provider(fake_llm).stream(request))

    assert "".join(deltas) == expected
    assert stop not in "".join(deltas)
    assert len(finished) == 1
    assert fake_llm.requests()[0]["body"]["stop"] == ["never appears", stop]


def test_it_stops_before_a_stop_sequence_on_the_wire(fake_llm: FakeLLMServer) -> None:
    stop = expected_reply(MESSAGES, 4)[3]  # e.g. " refund": the 4th token
    _, raw = raw_stream(fake_llm, stop=stop)

    chunks = [json.loads(e) for e in sse_events(raw)[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == REPLY[: REPLY.find(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_it_releases_the_connection_when_the_consumer_stops_early(fake_llm: FakeLLMServer) -> None:
    events = provider(fake_llm).stream(REQUEST)
    assert isinstance(events, Generator)
    assert isinstance(next(events), TextDelta)

    events.close()  # what happens when the reply service gives up on a stream

    deadline = time.monotonic() + 5
    while fake_llm.requests()[0]["outcome"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_llm.requests()[0]["outcome"] == "client_gone"


def test_it_shares_one_client_per_configuration(fake_llm: FakeLLMServer) -> None:
    a, b = provider(fake_llm), provider(fake_llm)
    c = provider(fake_llm, read_timeout=7)

    assert a._client is b._client
    assert a._client is not c._client
    assert a._client.max_retries == 0


def _connections_opened(p: OpenAIProvider, fake_llm: FakeLLMServer) -> int:
    transport = p._client._client._transport
    assert isinstance(transport, LeanTransport)
    return transport._pool.connection_from_url(fake_llm.base_url).num_connections


def test_it_streams_through_urllib3_and_reuses_the_connection_of_a_whole_reply(
    fake_llm: FakeLLMServer,
) -> None:
    p = provider(fake_llm, read_timeout=4.5)  # a client of its own: a fresh pool
    for _ in range(3):
        deltas, finished = collect(p.stream(REQUEST))
        assert "".join(deltas) == REPLY
        assert len(finished) == 1

    assert _connections_opened(p, fake_llm) == 1


def test_a_connection_left_mid_reply_is_closed_and_the_next_reply_comes_whole(
    fake_llm: FakeLLMServer,
) -> None:
    p = provider(fake_llm, read_timeout=4.25)
    events = p.stream(REQUEST)
    assert isinstance(next(events), TextDelta)
    events.close()  # a person took the conversation over

    deltas, _ = collect(p.stream(REQUEST))

    assert "".join(deltas) == REPLY
    # The server saw the first client go at once, not after its reply was read to the end.
    deadline = time.monotonic() + 5
    while None in [r["outcome"] for r in fake_llm.requests()] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["outcome"] for r in fake_llm.requests()] == ["client_gone", "complete"]


def test_behind_a_proxy_it_keeps_the_sdks_own_transport_which_honours_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert isinstance(lean_transport_for("https://api.openai.com/v1"), LeanTransport)

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert lean_transport_for("https://api.openai.com/v1") is None
    assert lean_transport_for(None) is None  # the SDK's default URL

    monkeypatch.setenv("NO_PROXY", "llm.internal")
    assert isinstance(lean_transport_for("http://llm.internal:8000/v1"), LeanTransport)


# --- The provider: failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": "7"}, 7.0),
        ({"retry_after_ms": "1500"}, 1.5),
        ({"retry_after": "0.25"}, 0.25),
    ],
)
def test_it_maps_a_429_to_a_transient_rate_limited_error_with_retry_after(
    fake_llm: FakeLLMServer, headers: dict[str, str], expected: float
) -> None:
    fake_llm.set_fault("429", **headers)

    deltas, error = stream_until_error(provider(fake_llm))

    assert deltas == []
    assert error.permanent is False
    assert error.code == "rate_limited"
    assert error.retry_after == expected
    # One request only: retrying is the reply service's job, not the SDK's.
    assert [r["retry_count"] for r in fake_llm.requests()] == [0]


def test_it_reads_a_retry_after_given_as_an_http_date(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("429", retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))

    _, error = stream_until_error(provider(fake_llm))

    assert error.code == "rate_limited"
    assert error.retry_after is not None
    assert 27 <= error.retry_after <= 31


def test_it_treats_an_exhausted_quota_as_permanent(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("429", error_code="insufficient_quota")

    _, error = stream_until_error(provider(fake_llm))

    assert error.permanent is True
    assert error.code == "quota_exceeded"


def test_it_maps_a_500_to_a_transient_server_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("500", retry_after="2")

    deltas, error = stream_until_error(provider(fake_llm))

    assert deltas == []
    assert error.permanent is False
    assert error.code == "server_error"
    assert error.retry_after == 2.0
    assert len(fake_llm.requests()) == 1


def test_it_times_out_a_stream_that_stalls(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("hang", hang_s=30)

    started = time.monotonic()
    deltas, error = stream_until_error(provider(fake_llm, read_timeout=0.5))
    elapsed = time.monotonic() - started

    assert deltas == []
    assert error.permanent is False
    assert error.code == "timeout"
    assert 0.4 <= elapsed < 3


def test_it_reports_a_stream_cut_mid_reply_as_interrupted(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("cut", cut_after=5)

    deltas, error = stream_until_error(provider(fake_llm))

    assert deltas == expected_reply(MESSAGES, 5)
    assert error.permanent is False
    assert error.code == "stream_interrupted"
    # The raw transport error: the provider reads the SDK's streaming response line by line.
    assert isinstance(error.__cause__, httpx2.RemoteProtocolError)


def test_it_reports_a_stream_that_ends_without_a_finish_as_interrupted(
    fake_llm: FakeLLMServer,
) -> None:
    # The HTTP body ends properly but the stream has no finish chunk and no [DONE]: the SDK
    # simply stops iterating, without an error.
    fake_llm.set_fault("cut", cut_after=3, clean_eof=True)

    deltas, error = stream_until_error(provider(fake_llm))

    assert deltas == expected_reply(MESSAGES, 3)
    assert error.permanent is False
    assert error.code == "stream_interrupted"


def test_it_recovers_on_the_next_request_after_a_cut(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("cut", cut_after=2)
    p = provider(fake_llm)
    stream_until_error(p)

    deltas, finished = collect(p.stream(REQUEST))

    assert "".join(deltas) == REPLY
    assert len(finished) == 1


@pytest.mark.parametrize("how", ["bad key", "401 fault"])
def test_it_maps_a_rejected_api_key_to_a_permanent_error(fake_llm: FakeLLMServer, how: str) -> None:
    if how == "401 fault":
        fake_llm.set_fault("401")
    p = provider(fake_llm, api_key="bad-key" if how == "bad key" else "test-key")

    _, error = stream_until_error(p)

    assert error.permanent is True
    assert error.code == "auth_error"
    assert error.retry_after is None


def test_it_maps_an_invalid_request_to_a_permanent_error(fake_llm: FakeLLMServer) -> None:
    _, error = stream_until_error(provider(fake_llm), ReplyRequest(messages=[]))

    assert error.permanent is True
    assert error.code == "bad_request"


def test_it_maps_a_content_filter_finish_to_a_permanent_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("content_filter", cut_after=4)

    deltas, error = stream_until_error(provider(fake_llm))

    assert deltas == expected_reply(MESSAGES, 4)
    assert error.permanent is True
    assert error.code == "content_filtered"


def test_it_maps_an_unreachable_server_to_a_transient_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once the socket is closed
    p = OpenAIProvider(
        api_key="k",
        base_url=f"http://127.0.0.1:{port}/v1",
        model=MODEL,
        connect_timeout=1,
        read_timeout=1,
    )

    _, error = stream_until_error(p)

    assert error.permanent is False
    assert error.code == "connection_error"


def test_it_applies_a_fault_only_as_many_times_as_asked(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_fault("500", times=2)
    p = provider(fake_llm)

    codes = [stream_until_error(p)[1].code for _ in range(2)]
    deltas, _ = collect(p.stream(REQUEST))

    assert codes == ["server_error", "server_error"]
    assert "".join(deltas) == REPLY


# --- The fake as a grounded model ---------------------------------------------------------------

GROUNDED_SYSTEM = (
    "You are a helpful support agent.\n\nPassages from our help articles follow, numbered [1] "
    "to [2].\n- Cite them like [1].\n\nPassages:\n\n"
    "[1] Recharging the Zephyr lantern\n"
    "To recharge the Zephyr lantern, plug its **magnetic cable** into a USB port. It glows "
    "green when full.\n\n"
    "[2] Zephyr lantern battery care — Storing\n"
    "- Store the lantern half full. Recharge it every three months."
)


def grounded_messages(system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]


def test_it_quotes_and_cites_the_numbered_passages_of_the_prompt(fake_llm: FakeLLMServer) -> None:
    client = openai.OpenAI(api_key="test-key", base_url=fake_llm.base_url, max_retries=0)
    messages = grounded_messages(GROUNDED_SYSTEM)

    completion = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == (
        "To recharge the Zephyr lantern, plug its magnetic cable [1] "
        "Store the lantern half full. [2]"
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(expected_reply(messages, 20))


def test_it_cites_a_single_passage_and_keeps_the_citation_when_cut_short() -> None:
    one = GROUNDED_SYSTEM.split("\n\n[2]")[0]
    assert "".join(expected_reply(grounded_messages(one), 20)) == (
        "To recharge the Zephyr lantern, plug its magnetic cable into a USB port. [1]"
    )
    assert "".join(expected_reply(grounded_messages(one), 4)) == "To recharge the [1]"
    assert "".join(expected_reply(grounded_messages(GROUNDED_SYSTEM), 3)) == "To recharge [1]"
    # Without numbered passages the fake talks as before: the prompt's "[1]" mid-line is no
    # passage.
    plain = [{"role": "system", "content": "Cite like [1]."}, {"role": "user", "content": "hi"}]
    assert expected_reply(plain, 20) == expected_reply([{"role": "user", "content": "hi"}], 20)


def test_for_the_load_benchmark_it_quotes_whole_passages_then_talks_on_to_the_reply_length() -> (
    None
):
    messages = grounded_messages(GROUNDED_SYSTEM)

    short = expected_reply(messages, 150)
    full = expected_reply(messages, 150, full_grounded=True)

    assert len(short) == 20  # a sentence of each passage, and its citation
    assert len(full) == 150
    assert "".join(full).startswith(
        "To recharge the Zephyr lantern, plug its magnetic cable into a USB port. It glows green "
        "when full. [1] Store the lantern half full. Recharge it every three months. [2] "
    )
    # Past the two quotes (30 tokens with their citations), words of its own, no citation.
    own = full[30:]
    assert {token.strip(" .").lower() for token in own} <= {w.lower() for w in VOCABULARY}


def test_the_load_benchmarks_replies_come_whole_over_the_wire() -> None:
    server = start_fake_llm(extra_args=["--full-grounded"])
    try:
        client = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0)
        messages = grounded_messages(GROUNDED_SYSTEM)
        completion = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    finally:
        server.stop()

    assert completion.usage is not None
    assert completion.usage.completion_tokens == FAKE_LLM_REPLY_TOKENS
    assert completion.choices[0].message.content == "".join(
        expected_reply(messages, FAKE_LLM_REPLY_TOKENS, full_grounded=True)
    )
