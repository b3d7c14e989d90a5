"""The OpenAI provider: any OpenAI-compatible chat completions API, through the official client.

Retrying is the reply writer's job (conversations/replies.py): the client is built with
max_retries=0 and every failure becomes a ProviderError whose `permanent` and `retry_after`
tell it what to do.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from bot.types import (
    ChatMessage,
    Finished,
    ProviderError,
    ReplyRequest,
    StreamEvent,
    TextDelta,
    estimate_tokens,
)

from .base import Provider
from .transport import lean_transport_for

_ClientKey = tuple[int, str, str | None, float, float]
_clients: dict[_ClientKey, openai.OpenAI] = {}
_clients_lock = threading.Lock()

# 4xx statuses worth trying again (the SDK's own retry rule); other 4xx are permanent.
_TRANSIENT_CODES = {408: "timeout", 409: "conflict"}
_PERMANENT_CODES = {
    400: "bad_request",
    401: "auth_error",
    403: "permission_denied",
    404: "not_found",
    422: "unprocessable",
}


def _client(api_key: str, base_url: str | None, connect: float, read: float) -> openai.OpenAI:
    """One client (one connection pool) per process and configuration, shared by all threads."""
    # The pid is part of the key: a client inherited through fork() would share its sockets
    # with the parent.
    key = (os.getpid(), api_key, base_url, connect, read)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            transport = lean_transport_for(base_url)
            client = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                http_client=None
                if transport is None
                else openai.DefaultHttpxClient(transport=transport),
                # `read` bounds the wait for each chunk, so a stream that stalls raises instead
                # of holding a worker thread. There is no whole-request timeout in httpx2 (a
                # positional default is ignored once all four are set): the reply service keeps
                # the overall deadline.
                timeout=openai.Timeout(connect=connect, read=read, write=read, pool=connect),
            )
            _clients[key] = client
        return client


class OpenAIProvider(Provider):
    name = "openai"
    streams_over_network = True

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
    ) -> None:
        self.model = model
        self.read_timeout = read_timeout
        self._client = _client(api_key, base_url, connect_timeout, read_timeout)

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        model = request.model or self.model
        text: list[str] = []
        finish_reason: str | None = None
        usage: tuple[int, int] | None = None
        # Closing the response when the consumer stops early (generator close) releases the
        # connection instead of leaving it to the garbage collector.
        with contextlib.ExitStack() as closing:
            try:
                # The SDK's streaming response, read as raw server-sent events: building a
                # pydantic model per chunk costs about 6x the CPU of json.loads, and a worker
                # parses thousands of chunks a second. Requests, auth, timeouts and status
                # errors are still the SDK's.
                response = closing.enter_context(
                    self._client.chat.completions.with_streaming_response.create(
                        model=model,
                        messages=[_message(m) for m in request.messages],
                        temperature=request.temperature,
                        top_p=request.top_p if request.top_p is not None else openai.omit,
                        max_tokens=request.max_tokens,
                        stop=request.stop or openai.omit,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                )
            except openai.OpenAIError as exc:
                raise _error(exc) from exc
            try:
                for chunk in _server_sent_json(response.iter_lines()):
                    if chunk.get("error"):
                        raise ProviderError(
                            f"The model reported an error mid-reply: {chunk['error']}",
                            code="stream_interrupted",
                        )
                    model = chunk.get("model") or model
                    if chunk.get("usage"):
                        usage = (
                            chunk["usage"]["prompt_tokens"],
                            chunk["usage"]["completion_tokens"],
                        )
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            text.append(content)
                            yield TextDelta(content)
                        finish_reason = choice.get("finish_reason") or finish_reason
            except (httpx2.TimeoutException, openai.APITimeoutError) as exc:
                message = f"The model sent nothing for {self.read_timeout:g}s mid-reply"
                raise ProviderError(message, code="timeout") from exc
            except (httpx2.HTTPError, openai.OpenAIError, ValueError, KeyError, TypeError) as exc:
                # The connection broke off mid-reply, or a chunk is not what the API sends
                # (a proxy's error page, a truncated line).
                raise ProviderError(
                    f"The model's stream broke off: {exc}", code="stream_interrupted"
                ) from exc

        if finish_reason is None:
            # The body ended cleanly but without a finish_reason: a proxy or server gave up.
            raise ProviderError("The model's stream ended early", code="stream_interrupted")
        if finish_reason == "content_filter":
            raise ProviderError(
                "The model's content filter stopped the reply",
                permanent=True,
                code="content_filtered",
            )
        if usage is None:  # some OpenAI-compatible servers ignore stream_options
            prompt = "\n".join(m.content for m in request.messages)
            usage = (estimate_tokens(prompt), estimate_tokens("".join(text)))
        yield Finished(model=model, prompt_tokens=usage[0], completion_tokens=usage[1])


def _server_sent_json(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`."""
    data: list[str] = []
    for line in lines:
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue  # comments (":…") and other fields carry nothing for chat completions
        if data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                return
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError(f"not a chunk: {payload[:80]}")
            yield chunk
    if data and data != ["[DONE]"]:
        yield json.loads("\n".join(data))


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _error(exc: openai.OpenAIError) -> ProviderError:
    """An error raised before any text arrived, as a ProviderError."""
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it's a subclass
        return ProviderError("The model did not answer in time", code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"Could not reach the model: {exc}", code="connection_error")
    if not isinstance(exc, openai.APIStatusError):
        return ProviderError(f"Model call failed: {exc}", code="provider_error")

    status, api_code = exc.status_code, exc.code
    message = f"The model API answered {status}: {exc.message}"
    retry_after = _retry_after(exc.response.headers)
    if status == 429 and api_code == "insufficient_quota":
        # Also a 429, but it lasts until someone pays: retrying only burns the retry budget.
        return ProviderError(message, permanent=True, code="quota_exceeded")
    if status == 429:
        return ProviderError(message, retry_after=retry_after, code="rate_limited")
    if status >= 500:
        return ProviderError(message, retry_after=retry_after, code="server_error")
    if status in _TRANSIENT_CODES:
        return ProviderError(message, retry_after=retry_after, code=_TRANSIENT_CODES[status])
    # Codes the reply service may act on (trim the history, explain a refusal).
    if api_code == "context_length_exceeded":
        return ProviderError(message, permanent=True, code="context_length_exceeded")
    if api_code in ("content_filter", "content_policy_violation"):
        return ProviderError(message, permanent=True, code="content_filtered")
    return ProviderError(message, permanent=True, code=_PERMANENT_CODES.get(status, "bad_request"))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None
