"""The one loop that streams an answer, for every caller: a customer's reply, the playground,
evaluations, eval_kb and agent assist.

`answer(request, provider)` lets the guards pick who answers (bot/guards.py: the bot's own
abstention when the knowledge base has nothing good enough, else the provider behind the
no-answer marker guard), reads its stream, and returns the Answer with its sources: those the
provider named, or else the passages its text cites by number.

`on_delta` gets the text as it streams, coalesced into pieces about every `flush_interval`
(REPLY_FLUSH_INTERVAL_S) except the first, which goes out at once so the customer sees the
answer start as early as possible. A model's stream (a socket) is not read between pieces:
its tokens wait in the socket and are read together when the next piece is due, for about
half the CPU of reading each as it comes (docs/performance.md).

When many answers stream in this process at once, the pieces get fuller instead of more
frequent (at most REPLY_FRAMES_PER_S pieces a second between them all): each piece costs a
frame through Redis and a web process, and a busy process would otherwise spend its CPU on
frames while new questions wait. `on_delta` returns False to stop the answer (a person took
the conversation): the provider's stream is closed and Stopped says what was said so far.

Without on_delta nobody watches the answer stream, so the bot's own words (the offline
answerer's, an abstention) come at once instead of at a reading pace.

Not retried here: a ProviderError is raised as it comes, and the caller decides (the reply
writer retries; the playground and evaluations report it).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from bot import config as bot_config
from bot import grounding, guards
from bot.providers import registry
from bot.providers.base import Provider, close_stream
from bot.types import Finished, ProviderError, ReplyRequest, Source, TextDelta
from knowledge import language
from knowledge import search as knowledge_search


def warm_up() -> None:
    """Load what a process's first answer would otherwise load while its customer waits: the
    language identifier (~0.4 s), the knowledge index with the question model (~0.5 s) and
    the active configuration's provider with its HTTP client (~60 ms). The last two read the
    database; the identifier is loaded even when it cannot be read."""
    language.warm_up()
    knowledge_search.knowledge_index.get()
    registry.for_config(bot_config.active())


# Gets a piece of the answer; returns False to stop it.
OnDelta = Callable[[str], bool | None]

# A token the stream hands over sooner than this after it was asked for was already waiting
# (read from the socket's buffer), so more may be: a piece that is due takes them in first.
ALREADY_THERE_S = 0.002


class _Watched:
    """How many answers stream to someone in this process right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def started(self) -> None:
        with self._lock:
            self.count += 1

    def ended(self) -> None:
        with self._lock:
            self.count -= 1


watched = _Watched()


def paced_interval(base: float) -> float:
    """Seconds between the pieces of one answer: `base`, or longer when the answers streaming
    in this process would together send more than REPLY_FRAMES_PER_S pieces a second."""
    rate = float(settings.REPLY_FRAMES_PER_S)
    return max(base, watched.count / rate) if rate > 0 else base


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    abstained: bool
    # Who decided there was no answer: "retrieval" (no passage good enough, no model asked) or
    # "model" (it found no answer in the passages it was given); None when it answered.
    abstained_by: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    started_at: float  # time.time() when the stream was asked for
    first_token_at: float | None  # time.time() of the first text
    finished_at: float


class Stopped(Exception):
    """on_delta asked to stop the answer: `text` is what it had been given."""

    def __init__(self, text: str, first_token_at: float | None) -> None:
        super().__init__("stopped")
        self.text = text
        self.first_token_at = first_token_at


def answer(
    request: ReplyRequest,
    provider: Provider,
    *,
    on_delta: OnDelta | None = None,
    deadline: float | None = None,
    flush_interval: float | None = None,
) -> Answer:
    """Stream one answer to `request` (see the module doc). `deadline`: a time.monotonic()
    after which the answer fails with a permanent ProviderError("timeout")."""
    base = settings.REPLY_FLUSH_INTERVAL_S if flush_interval is None else flush_interval
    if on_delta is None and request.paced:
        request = dataclasses.replace(request, paced=False)
    started_at = time.time()
    first_token_at: float | None = None
    text: list[str] = []
    pending: list[str] = []
    finished: Finished | None = None
    last_flush = 0.0
    answerer = guards.guarded(request, provider)
    events = answerer.stream(request)
    gathers = on_delta is not None and answerer.streams_over_network
    if on_delta is not None:
        watched.started()
    interval = paced_interval(base)
    try:
        while True:
            asked = time.monotonic()
            event = next(events, None)
            if event is None:
                break
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise ProviderError("reply deadline passed", permanent=True, code="timeout")
            if not isinstance(event, TextDelta):
                finished = event
            elif event.text:
                if first_token_at is None:
                    first_token_at = time.time()
                text.append(event.text)
                pending.append(event.text)
            if on_delta is not None and pending and now - last_flush >= interval:
                if gathers and now - asked < ALREADY_THERE_S and now - last_flush < 2 * interval:
                    continue  # more of this piece is waiting in the socket: it goes in too
                go_on = on_delta("".join(pending))
                pending.clear()
                last_flush = now
                interval = paced_interval(base)
                if go_on is False:
                    raise Stopped("".join(text), first_token_at)
                if gathers:
                    # The next piece's tokens gather in the socket meanwhile, and are read in
                    # one go: one wake-up of this thread a piece instead of one a token.
                    time.sleep(interval)
    finally:
        if on_delta is not None:
            watched.ended()
        close_stream(events)  # a stop or an error
    if on_delta is not None and pending:
        on_delta("".join(pending))
    if finished is None:
        raise ProviderError("the stream ended without a finish", code="stream_interrupted")
    full = "".join(text)
    return Answer(
        text=full,
        sources=sources_of(finished, full, request),
        abstained=finished.abstained,
        abstained_by=_abstained_by(finished, request),
        model=finished.model or ("" if finished.abstained else request.model),
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        started_at=started_at,
        first_token_at=first_token_at,
        finished_at=time.time(),
    )


def sources_of(finished: Finished, text: str, request: ReplyRequest) -> list[Source]:
    """The sources of a finished answer: those its provider named, or else the passages its
    text cites by number (a model names its sources only that way). An abstention has none."""
    knowledge = request.knowledge
    if finished.abstained:
        return []
    if finished.sources or knowledge is None or not knowledge.passages:
        return finished.sources
    return grounding.cited_sources(text, knowledge.passages)


def _abstained_by(finished: Finished, request: ReplyRequest) -> str | None:
    if not finished.abstained:
        return None
    knowledge = request.knowledge
    if knowledge is not None and knowledge.out_of_domain:
        return "out_of_domain"
    return "retrieval" if knowledge is not None and knowledge.abstain else "model"
