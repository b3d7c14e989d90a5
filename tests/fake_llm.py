"""A fake OpenAI-compatible chat server: real HTTP and SSE, deterministic text, faults on demand.

    python -m tests.fake_llm --port 9100 --ttft-ms 300 --tokens-per-s 50 --reply-tokens 150

A pure ASGI application served by uvicorn (no Django, no framework) so tests, the demo and the
load benchmark exercise the real `openai` client over a real socket. A reply's tokens are
`expected_reply(messages, n)` (cut by `apply_stop` when the request has `stop`): tests compare
against them instead of hard-coding text. Given numbered help-article passages in the system
prompt, the reply quotes and cites them like a model that follows the grounding rules.

Endpoints:
    GET  /v1/models, GET /v1/models/{id}
    POST /v1/chat/completions          streaming (SSE) and not, like api.openai.com
    POST /_control/faults              {"fault": "429"|"500"|"401"|"hang"|"cut"|"content_filter"
                                        |"mix"|"none", "times": 1 (-1: every request),
                                        "retry_after", "retry_after_ms", "error_code", "cut_after",
                                        "clean_eof", "hang_s"}; "mix" draws each request's fault
                                        at random: "mix": {"429": 0.3, "cut": 0.2, ...}
                                        (probabilities, the rest unfaulted), "seed": 7
    GET  /_control/faults              the fault now armed
    POST /_control/replies             {"replies": [["[[NO_", "ANSWER]]"], ...]}: the next chat
                                        requests, one each and in order, get these tokens (one
                                        SSE chunk each) instead of the deterministic reply;
                                        queued after any still waiting
    POST /_control/budget              {"requests_per_min": 100, "tokens_per_min": 0}: enforce
                                        an account's rate limits as OpenAI does (token buckets
                                        that hold a minute's budget and refill continuously;
                                        a request's tokens are its prompt plus max_tokens,
                                        counted up front); 0 = no limit, both 0 = off. Over it:
                                        a real 429 with retry-after(-ms); every answer carries
                                        x-ratelimit-{limit,remaining,reset}-{requests,tokens}
    GET  /_control/budget              the budget and what is left of it
    GET  /_control/requests            the chat requests received, oldest first: [{index,
                                        arrived_at, client, body, headers, retry_count (from
                                        x-stainless-retry-count), fault, budget (the limit a
                                        429 was for), outcome}]
    POST /_control/reset               disarm the fault and the budget, forget the recorded
                                        requests and the scripted replies

The API key "bad-key" is always refused with a 401, like an invalid key on the real API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import random
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODELS = ("gpt-4o-mini", "fake-llm")
BAD_API_KEY = "bad-key"
FAULTS = ("none", "429", "500", "401", "hang", "cut", "content_filter", "mix")
# What "mix" may draw from: every fault but itself and "none" (the share left over).
MIXABLE = FAULTS[1:-1]
MAX_RECORDED_REQUESTS = 10_000
# Budget arithmetic on monotonic seconds: (now + step) - 60 - now can come out 1e-12 over zero
# (a refusal "in 1ms" of a request that fits; 1,019 tokens left of 1,020).
FLOAT_SLACK_S = 1e-6

# A small fixed vocabulary keeps replies readable in the demo UI and tokens one word each.
_PROSE = (
    "thanks for reaching out we can help with your order account billing refund "
    "delivery shipping tracking number invoice plan subscription password reset "
    "email address support team article guide settings page please check the "
    "link below and let us know if anything else is unclear today our policy allows "
    "returns within thirty days most requests are handled quickly you will receive "
    "a confirmation message once that is done"
)
VOCABULARY = tuple(_PROSE.split())


# --- The deterministic "model" ---------------------------------------------------------------


def _text(content: Any) -> str:
    """Message content is a string or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def expected_reply(
    messages: Sequence[dict[str, Any]], n_tokens: int, *, full_grounded: bool = False
) -> list[str]:
    """The reply's tokens: the same messages always give the same text.

    With numbered help-article passages in the system prompt (lines "[1] Title", each followed
    by the passage's text, as conversations/grounding.py writes them) the fake behaves like a
    model that follows the grounding rules: it quotes the first sentence of passage [1] and
    cites it with " [1]"; when there is a passage [2], it also quotes the first sentence of [2]
    and cites " [2]". Words are tokens and citations are tokens of their own; a quote is cut
    short so that its citation always fits in n_tokens ([1] gets half of them when there are
    two passages). With `full_grounded` (the load benchmark's replies, as long as a model's)
    each quote runs on through its whole passage, and the reply goes on in words of its own
    to n_tokens, as a model's longer answer would. Otherwise the reply is words drawn from a
    small vocabulary, seeded by the last user message; each token then depends only on the
    ones before it, so a reply cut by max_tokens is a prefix of the whole one.
    """
    last_user = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    passages = _passages(messages)
    if 1 in passages and not full_grounded:
        return _grounded_reply(passages, n_tokens)
    if 1 in passages:
        quoted = _grounded_reply(passages, n_tokens, full=True)
        own = _vocabulary_reply(last_user, n_tokens - len(quoted))
        return quoted + [" " + token.lstrip() for token in own]
    return _vocabulary_reply(last_user, n_tokens)


def _vocabulary_reply(seed_text: str, n_tokens: int) -> list[str]:
    # sha256/shake, not hash() or random: str hashes are salted per process (the tests run in
    # another one), and one digest is much cheaper than a random() call a token.
    seed = hashlib.sha256(seed_text.encode()).digest()
    draws = hashlib.shake_128(seed).digest(2 * max(n_tokens, 0))
    # Each token depends only on the ones before it, so a reply cut by max_tokens is a prefix.
    tokens: list[str] = []
    capitalise = True
    for i in range(n_tokens):
        word = VOCABULARY[draws[2 * i] % len(VOCABULARY)]
        if capitalise:
            word = word.capitalize()
        capitalise = draws[2 * i + 1] < 31  # about one sentence in eight words
        if capitalise:
            word += "."
        tokens.append(word if i == 0 else " " + word)
    return tokens


_PASSAGE_HEADER = re.compile(r"^\[(\d{1,3})\] .*$", re.M)
_MARKDOWN_LINE_START = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d{1,3}[.)]\s+)", re.M)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _passages(messages: Sequence[dict[str, Any]]) -> dict[int, str]:
    """The numbered passages of the system prompt: {number: text}."""
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    headers = list(_PASSAGE_HEADER.finditer(system))
    passages: dict[int, str] = {}
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(system)
        passages.setdefault(int(header.group(1)), system[header.end() : end].strip())
    return passages


def _words(markdown: str) -> list[str]:
    text = _MARKDOWN_LINE_START.sub("", markdown).replace("**", "").replace("`", "")
    return text.split()


def _first_sentence(markdown: str) -> list[str]:
    return _SENTENCE_END.split(" ".join(_words(markdown)), maxsplit=1)[0].split()


def _grounded_reply(passages: dict[int, str], n_tokens: int, *, full: bool = False) -> list[str]:
    cited = [n for n in (1, 2) if n in passages]
    if len(cited) == 2 and n_tokens < 4:
        cited = [1]
    tokens: list[str] = []
    for i, n in enumerate(cited):
        last = i == len(cited) - 1
        room = n_tokens - len(tokens) if last else n_tokens // 2
        words = _words(passages[n]) if full else _first_sentence(passages[n])
        for word in words[: max(0, room - 1)]:
            tokens.append(" " + word if tokens else word)
        tokens.append(f" [{n}]" if tokens else f"[{n}]")
    return tokens


def apply_stop(tokens: list[str], stop: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """Cut the tokens before the first stop sequence, as the API does; True if one was found."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    text = "".join(tokens)
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not found:
        return tokens, False
    cut = min(found)
    kept: list[str] = []
    position = 0
    for token in tokens:
        if position + len(token) >= cut:
            if token[: cut - position]:
                kept.append(token[: cut - position])
            break
        kept.append(token)
        position += len(token)
    return kept, True


def estimate_prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    return sum(len(_text(m.get("content"))) for m in messages) // 4 + 3 * len(messages)


# --- Faults and records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    fault: str = "none"
    times: int = 0
    retry_after: str | None = None
    retry_after_ms: str | None = None
    error_code: str | None = None
    cut_after: int = 0
    clean_eof: bool = False
    hang_s: float = 3600.0
    # "mix" only: {fault: probability} drawn per request, and the seed of the draws.
    mix: dict[str, float] = field(default_factory=dict)
    seed: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        fault = str(data.get("fault", "none"))
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")

        def header(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        mix: dict[str, float] = {}
        if fault == "mix":
            given = data.get("mix")
            if not isinstance(given, dict) or not given:
                raise ValueError('"mix" needs {"mix": {fault: probability, ...}}')
            for name, share in given.items():
                if name not in MIXABLE:
                    raise ValueError(f"cannot mix {name!r}; one of {', '.join(MIXABLE)}")
                mix[name] = float(share)
            if any(share < 0 for share in mix.values()) or sum(mix.values()) > 1 + 1e-9:
                raise ValueError("mix probabilities must be ≥ 0 and add up to at most 1")
        return cls(
            fault=fault,
            # A mix applies to every request unless told otherwise.
            times=0 if fault == "none" else int(data.get("times", -1 if mix else 1)),
            retry_after=header("retry_after"),
            retry_after_ms=header("retry_after_ms"),
            error_code=header("error_code"),
            cut_after=int(data.get("cut_after", 0)),
            clean_eof=bool(data.get("clean_eof", False)),
            hang_s=float(data.get("hang_s", 3600.0)),
            mix=mix,
            seed=None if data.get("seed") is None else int(data["seed"]),
        )


def _scripted_replies(data: Any) -> list[list[str]]:
    """The replies of a POST /_control/replies body, checked."""
    replies = data.get("replies") if isinstance(data, dict) else None
    if not isinstance(replies, list) or not all(
        isinstance(r, list) and all(isinstance(t, str) for t in r) for r in replies
    ):
        raise ValueError('expected {"replies": [[token, ...], ...]}')
    return replies


def _duration(seconds: float) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


@dataclass
class Budget:
    """An account's rate limits as OpenAI enforces them: for requests and for tokens, a bucket
    that holds a minute's budget and refills continuously (a GCRA per limit), so a burst of up
    to the limit goes through, then one request every 60/limit seconds. 0: no limit."""

    requests_per_min: int = 0
    tokens_per_min: int = 0
    # Theoretical arrival times (the event loop's clock): the bucket is full when <= now.
    requests_tat: float = 0.0
    tokens_tat: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> Budget:
        if not isinstance(data, dict) or set(data) - {"requests_per_min", "tokens_per_min"}:
            raise ValueError('expected {"requests_per_min": N, "tokens_per_min": N}')
        limits = {name: data.get(name, 0) for name in ("requests_per_min", "tokens_per_min")}
        for name, value in limits.items():
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a whole number ≥ 0 (0: no limit)")
        return cls(**limits)

    @property
    def armed(self) -> bool:
        return self.requests_per_min > 0 or self.tokens_per_min > 0

    def _limits(self, tokens: int) -> list[tuple[str, int, float, float]]:
        """(name, limit, this request's step, the bucket's tat) for each limit set."""
        found = []
        if self.requests_per_min:
            found.append(("requests", self.requests_per_min, 60 / self.requests_per_min,
                          self.requests_tat))  # fmt: skip
        if self.tokens_per_min:
            found.append(("tokens", self.tokens_per_min, 60 * tokens / self.tokens_per_min,
                          self.tokens_tat))  # fmt: skip
        return found

    def take(self, now: float, tokens: int) -> tuple[str | None, float]:
        """Charge a request of `tokens` arriving `now`: (None, 0) when it may go, else (the
        limit it exceeds, seconds until it would fit)."""
        for name, _limit, step, tat in self._limits(tokens):
            over = max(tat, now) + step - 60 - now
            if over > FLOAT_SLACK_S:
                return name, over
        if self.requests_per_min:
            self.requests_tat = max(self.requests_tat, now) + 60 / self.requests_per_min
        if self.tokens_per_min:
            self.tokens_tat = max(self.tokens_tat, now) + 60 * tokens / self.tokens_per_min
        return None, 0.0

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """x-ratelimit-limit/remaining/reset for each limit set, as OpenAI sends them."""
        headers = []
        for name, limit, _step, tat in self._limits(0):
            debt = max(0.0, tat - now)  # seconds until the bucket is full again
            remaining = max(0, math.floor(limit * (60 - debt) / 60 + FLOAT_SLACK_S))
            headers += [
                (f"x-ratelimit-limit-{name}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{name}".encode(), str(remaining).encode()),
                (f"x-ratelimit-reset-{name}".encode(), _duration(debt).encode()),
            ]
        return headers

    def as_json(self, now: float) -> dict[str, Any]:
        state: dict[str, Any] = {
            "requests_per_min": self.requests_per_min,
            "tokens_per_min": self.tokens_per_min,
        }
        for name, value in self.headers(now):
            state[name.decode()] = value.decode()
        return state


class State:
    """What the control API changes. One event loop: no locks needed."""

    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault or Fault()
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.count = 0
        self.draws = random.Random()  # noqa: S311 - fault draws, not secrets
        # Replies a test scripted for the next requests, oldest first: what a real model may say
        # and the deterministic one never does.
        self.scripted: deque[list[str]] = deque()
        self.budget = Budget()

    def arm(self, fault: Fault) -> None:
        self.fault = fault
        if fault.seed is not None:
            self.draws.seed(fault.seed)

    def reset(self) -> None:
        self.fault = Fault()
        self.requests.clear()
        self.scripted.clear()
        self.budget = Budget()

    def take_fault(self) -> Fault | None:
        """The fault for the request now arriving, counting it against `times`."""
        fault = self.fault
        if fault.fault == "none" or fault.times == 0:
            return None
        if fault.times > 0:
            self.fault = replace(fault, times=fault.times - 1)
        if fault.fault == "mix":
            return self._draw(fault)
        return fault

    def _draw(self, mix: Fault) -> Fault | None:
        """One request's fault under a mix: each with its probability, else none."""
        point, cumulative = self.draws.random(), 0.0
        for name, share in mix.mix.items():
            cumulative += share
            if point < cumulative:
                return replace(mix, fault=name, mix={})
        return None


# --- ASGI plumbing -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _token_json(token: str) -> bytes:
    # Replies reuse a small vocabulary: each distinct token is encoded once per process.
    return json.dumps(token).encode()


def _dumps(value: Any) -> str:
    # The real API's separators: no spaces.
    return json.dumps(value, separators=(",", ":"))


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return _dumps({"error": error}).encode()


async def _send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


class FakeLLM:
    """The ASGI application. Timings are per server; faults are switched through /_control."""

    def __init__(
        self,
        *,
        ttft_ms: float = 300,
        tokens_per_s: float = 50,
        reply_tokens: int = 150,
        fault: Fault | None = None,
        full_grounded: bool = False,
    ) -> None:
        self.ttft = ttft_ms / 1000
        self.interval = 1 / tokens_per_s if tokens_per_s > 0 else 0.0
        self.reply_tokens = reply_tokens
        self.full_grounded = full_grounded
        self.state = State(fault)
        self.fingerprint = "fp_" + hashlib.sha256(b"fake_llm").hexdigest()[:10]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        try:
            if path == "/v1/chat/completions" and method == "POST":
                await self._chat(scope, receive, send)
            elif path == "/v1/models" and method == "GET":
                await _send_json(
                    send, 200, _dumps({"object": "list", "data": self._models()}).encode()
                )
            elif path.startswith("/v1/models/") and method == "GET":
                await self._model(path.removeprefix("/v1/models/"), send)
            elif path.startswith("/_control/"):
                await self._control(method, path.removeprefix("/_control/"), receive, send)
            else:
                body = _error_body(
                    f"Unknown request URL: {method} {path}.", "invalid_request_error", "unknown_url"
                )
                await _send_json(send, 404, body)
        except ConnectionError:
            pass  # The client left before we answered: nothing to answer.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _models(self) -> list[dict[str, Any]]:
        return [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake-llm"}
            for m in MODELS
        ]

    async def _model(self, model_id: str, send: Send) -> None:
        for model in self._models():
            if model["id"] == model_id:
                await _send_json(send, 200, _dumps(model).encode())
                return
        message = f"The model '{model_id}' does not exist or you do not have access to it."
        await _send_json(
            send, 404, _error_body(message, "invalid_request_error", "model_not_found")
        )

    async def _control(self, method: str, action: str, receive: Receive, send: Send) -> None:
        state = self.state
        body = await _read_body(receive)
        if action == "faults" and method == "POST":
            try:
                state.arm(Fault.from_json(json.loads(body or b"{}")))
            except (ValueError, TypeError) as exc:
                await _send_json(send, 400, _error_body(str(exc), "invalid_request_error", None))
                return
            await _send_json(send, 200, _dumps(asdict(state.fault)).encode())
        elif action == "replies" and method == "POST":
            try:
                replies = _scripted_replies(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                await _send_json(send, 400, _error_body(str(exc), "invalid_request_error", None))
                return
            state.scripted.extend(replies)
            await _send_json(send, 200, _dumps({"queued": len(state.scripted)}).encode())
        elif action == "budget" and method == "POST":
            try:
                state.budget = Budget.from_json(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                await _send_json(send, 400, _error_body(str(exc), "invalid_request_error", None))
                return
            now = asyncio.get_running_loop().time()
            await _send_json(send, 200, _dumps(state.budget.as_json(now)).encode())
        elif action == "budget" and method == "GET":
            now = asyncio.get_running_loop().time()
            await _send_json(send, 200, _dumps(state.budget.as_json(now)).encode())
        elif action == "faults" and method == "GET":
            await _send_json(send, 200, _dumps(asdict(state.fault)).encode())
        elif action == "requests" and method == "GET":
            await _send_json(send, 200, _dumps(list(state.requests)).encode())
        elif action == "reset" and method == "POST":
            state.reset()
            await _send_json(send, 200, b'{"ok":true}')
        else:
            await _send_json(
                send,
                404,
                _error_body(f"No control action {method} {action}", "invalid_request_error", None),
            )

    # --- Chat completions ------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        raw = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = self._record(scope, headers, body)

        api_key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not api_key or api_key == BAD_API_KEY:
            record["outcome"] = "401"
            await self._unauthorised(send, api_key)
            return
        problem = self._invalid(body)
        if problem:
            record["outcome"] = "400"
            await _send_json(
                send, 400, _error_body(problem[0], "invalid_request_error", None, problem[1])
            )
            return
        budget = self.state.budget
        limit_headers: list[tuple[bytes, bytes]] = []
        if budget.armed:
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            tokens = estimate_prompt_tokens(body["messages"]) + (limit or self.reply_tokens)
            exceeded, wait = budget.take(arrived, tokens)
            limit_headers = budget.headers(arrived)
            if exceeded is not None:
                record["outcome"], record["budget"] = "429", exceeded
                await self._over_budget(send, body, budget, exceeded, wait, limit_headers)
                return
        fault = self.state.take_fault()
        record["fault"] = fault.fault if fault else None
        if fault and fault.fault in ("429", "500", "401"):
            record["outcome"] = fault.fault
            await self._fault_response(fault, send)
            return

        messages = body["messages"]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        scripted = self.state.scripted.popleft() if self.state.scripted else None
        record["scripted"] = scripted is not None
        full = len(scripted) if scripted is not None else self.reply_tokens
        n = min(full, limit) if limit else full
        reply = (
            scripted[:n]
            if scripted is not None
            else expected_reply(messages, n, full_grounded=self.full_grounded)
        )
        tokens, stopped = apply_stop(reply, body.get("stop"))
        finish = "stop" if stopped or not limit or limit >= full else "length"
        if fault and fault.fault == "content_filter":
            tokens, finish = tokens[: fault.cut_after], "content_filter"
        prompt_tokens = estimate_prompt_tokens(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        head = {
            "id": "chatcmpl-" + secrets.token_hex(15)[:29],
            "object": "chat.completion.chunk" if body.get("stream") else "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        # uvicorn's send() is silent once the client has gone; this completes when it does.
        watch = asyncio.ensure_future(receive())
        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                record["outcome"] = await self._stream(
                    send,
                    watch,
                    head,
                    tokens,
                    finish,
                    usage if include_usage else None,
                    arrived,
                    fault,
                    limit_headers,
                )
            else:
                record["outcome"] = await self._complete(
                    send, watch, head, tokens, finish, usage, arrived, fault, limit_headers
                )
        finally:
            watch.cancel()

    def _record(self, scope: Scope, headers: dict[str, str], body: Any) -> dict[str, Any]:
        retry_count = headers.get("x-stainless-retry-count")
        client = scope.get("client")
        record = {
            "index": self.state.count,
            "arrived_at": time.time(),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "body": body,
            "retry_count": int(retry_count) if retry_count and retry_count.isdigit() else None,
            "headers": headers,
            "fault": None,  # the fault applied to it, if any
            "budget": None,  # the limit (requests, tokens) it was refused for with a 429
            "scripted": False,  # whether it got a scripted reply
            "outcome": None,  # set when answered: "complete", "client_gone", "cut" or a status
        }
        self.state.requests.append(record)
        self.state.count += 1
        return record

    @staticmethod
    def _invalid(body: Any) -> tuple[str, str] | None:
        """Checks the real API makes before it generates anything: (message, param) or None."""
        if not isinstance(body, dict):
            return "We could not parse the JSON body of your request.", ""
        if not body.get("model"):
            return "you must provide a model parameter", "model"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return f"{messages!r} is too short - 'messages'", "messages"
        if not all(isinstance(m, dict) and "role" in m for m in messages):
            return "Invalid 'messages': each message needs a 'role'.", "messages"
        stop = body.get("stop")
        if (
            stop is not None
            and not isinstance(stop, str)
            and (not isinstance(stop, list) or len(stop) > 4)
        ):
            return "Invalid 'stop': a string or an array of at most 4 strings.", "stop"
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                return f"Invalid '{name}': integer below minimum value.", name
        return None

    async def _unauthorised(self, send: Send, api_key: str) -> None:
        if api_key:
            message = f"Incorrect API key provided: {api_key}. You can find your API key at https://platform.openai.com/account/api-keys."
        else:
            message = "You didn't provide an API key."
        await _send_json(
            send, 401, _error_body(message, "invalid_request_error", "invalid_api_key")
        )

    async def _fault_response(self, fault: Fault, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if fault.retry_after is not None:
            headers.append((b"retry-after", fault.retry_after.encode()))
        if fault.retry_after_ms is not None:
            headers.append((b"retry-after-ms", fault.retry_after_ms.encode()))
        if fault.fault == "429":
            code = fault.error_code or "rate_limit_exceeded"
            if code == "insufficient_quota":
                message = (
                    "You exceeded your current quota, please check your plan and billing details."
                )
                type_ = "insufficient_quota"
            else:
                message = "Rate limit reached for requests (fake_llm). Please try again later."
                type_ = "requests"
            await _send_json(send, 429, _error_body(message, type_, code), headers)
        elif fault.fault == "401":
            await self._unauthorised(send, "sk-revoked")
        else:
            message = "The server had an error while processing your request. Sorry about that!"
            await _send_json(
                send, 500, _error_body(message, "server_error", fault.error_code), headers
            )

    async def _over_budget(
        self,
        send: Send,
        body: dict[str, Any],
        budget: Budget,
        exceeded: str,
        wait: float,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """The 429 OpenAI answers a request over the account's limit: how long to wait in
        retry-after (whole seconds) and retry-after-ms, and the limits' headers."""
        short = {"requests": "RPM", "tokens": "TPM"}[exceeded]
        limit = budget.requests_per_min if exceeded == "requests" else budget.tokens_per_min
        message = (
            f"Rate limit reached for {body['model']} in organization org-fake on {exceeded} "
            f"per min ({short}): Limit {limit}. Please try again in {_duration(wait)}."
        )
        retry = [
            (b"retry-after", str(max(1, math.ceil(wait))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()),
        ]
        await _send_json(
            send,
            429,
            _error_body(message, exceeded, "rate_limit_exceeded"),
            [*retry, *headers],
        )

    async def _stream(
        self,
        send: Send,
        watch: asyncio.Future[Message],
        head: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, Any] | None,
        arrived: float,
        fault: Fault | None,
        limit_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> str:
        # Everything but the token text is the same on every chunk: serialise it once, so each
        # chunk costs a concatenation, a sleep and one send.
        prefix = "data: " + _dumps(head)[:-1] + ',"choices":[{"index":0,"delta":'
        suffix = "}]" + (',"usage":null' if usage is not None else "") + "}\n\n"
        choice_end = ',"logprobs":null,"finish_reason":'
        role = (
            prefix
            + '{"role":"assistant","content":"","refusal":null}'
            + choice_end
            + "null"
            + suffix
        )
        content_prefix = (prefix + '{"content":').encode()
        content_suffix = ("}" + choice_end + "null" + suffix).encode()
        tail = prefix + "{}" + choice_end + f'"{finish}"' + suffix
        if usage is not None:
            tail += "data: " + _dumps({**head, "choices": [], "usage": usage}) + "\n\n"
        tail += "data: [DONE]\n\n"

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", ("req_" + secrets.token_hex(16)).encode()),
                    (b"openai-processing-ms", b"%d" % int(self.ttft * 1000)),
                    *limit_headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": role.encode(), "more_body": True})

        loop = asyncio.get_running_loop()
        first_due = arrived + self.ttft
        if fault and fault.fault == "hang":
            await asyncio.wait((watch,), timeout=fault.hang_s)
            if watch.done():
                return "client_gone"
            first_due = max(first_due, loop.time())
        cut_after = fault.cut_after if fault and fault.fault == "cut" else None
        interval = self.interval
        for i, token in enumerate(tokens[:cut_after]):
            # Each token's due time comes from the stream's start, so late wake-ups don't add up.
            delay = first_due + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if watch.done():
                return "client_gone"
            chunk = content_prefix + _token_json(token) + content_suffix
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if cut_after is None:
            await send({"type": "http.response.body", "body": tail.encode(), "more_body": False})
            return "complete"
        if fault and fault.clean_eof:
            # A well-formed end of the HTTP body, but no finish chunk and no [DONE].
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # Otherwise return mid-body: uvicorn drops the connection (no [DONE], no final chunk).
        return "cut"

    async def _complete(
        self,
        send: Send,
        watch: asyncio.Future[Message],
        head: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, Any],
        arrived: float,
        fault: Fault | None,
        limit_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> str:
        loop = asyncio.get_running_loop()
        wait = arrived + self.ttft + len(tokens) * self.interval - loop.time()
        if fault and fault.fault == "hang":
            wait += fault.hang_s
        if wait > 0:
            await asyncio.wait((watch,), timeout=wait)
        if watch.done():
            return "client_gone"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(tokens),
            "refusal": None,
            "annotations": [],
        }
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        body = _dumps({**head, "choices": [choice], "usage": usage}).encode()
        if fault and fault.fault == "cut":
            # Promise the whole body, deliver part of it, then drop the connection.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
            return "cut"
        await _send_json(send, 200, body, limit_headers)
        return "complete"


# --- Running it -----------------------------------------------------------------------------------


class _QuietDeliberateCuts(logging.Filter):
    """The "cut" fault drops connections on purpose; uvicorn would log each one as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options, shared with `manage.py fake_llm`."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed)")
    parser.add_argument("--ttft-ms", type=float, default=300, help="time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=50, help="0: no pacing")
    parser.add_argument("--reply-tokens", type=int, default=150, help="tokens a reply has")
    parser.add_argument(
        "--full-grounded",
        action="store_true",
        help="grounded replies quote their passages on to --reply-tokens, not one sentence each",
    )
    parser.add_argument(
        "--fault", choices=FAULTS[:-1], default="none", help="a fault armed at start"
    )
    parser.add_argument("--fault-times", type=int, default=-1, help="requests it applies to")
    parser.add_argument(
        "--requests-per-min", type=int, default=0, help="enforce a budget with 429s (0: none)"
    )
    parser.add_argument("--tokens-per-min", type=int, default=0, help="the same for tokens")
    parser.add_argument("--log-level", default="warning")


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 9100,
    ttft_ms: float = 300,
    tokens_per_s: float = 50,
    reply_tokens: int = 150,
    full_grounded: bool = False,
    fault: str = "none",
    fault_times: int = -1,
    requests_per_min: int = 0,
    tokens_per_min: int = 0,
    log_level: str = "warning",
) -> None:
    """Serve until interrupted. Prints `fake_llm listening on http://HOST:PORT` once bound."""
    import uvicorn

    armed = Fault.from_json({"fault": fault, "times": fault_times})
    app = FakeLLM(
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        reply_tokens=reply_tokens,
        fault=armed,
        full_grounded=full_grounded,
    )
    app.state.budget = Budget.from_json(
        {"requests_per_min": requests_per_min, "tokens_per_min": tokens_per_min}
    )
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        http = "httptools"
    except ImportError:  # uvicorn without [standard]: slower, still correct
        loop_factory, http = None, "h11"
    config = uvicorn.Config(
        app,
        http=http,
        loop="none",  # the loop is made below, by the runner
        lifespan="on",
        access_log=False,
        log_level=log_level,
        backlog=4096,
        limit_concurrency=100_000,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    # Bind here rather than in uvicorn so that --port 0 works and the real port can be printed.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    bound_port = sock.getsockname()[1]

    async def run() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            display = f"[{host}]" if ":" in host else host
            print(f"fake_llm listening on http://{display}:{bound_port}", flush=True)
        await serving

    logging.getLogger("uvicorn.error").addFilter(_QuietDeliberateCuts())
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises it: no traceback for that.
    with (
        asyncio.Runner(loop_factory=loop_factory) as runner,
        contextlib.suppress(KeyboardInterrupt),
    ):
        runner.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_llm", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    serve(**vars(parser.parse_args(argv)))


app = FakeLLM()  # for `uvicorn tests.fake_llm:app` with the default timings

if __name__ == "__main__":
    main()
