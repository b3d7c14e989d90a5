"""Hedged requests: when a model has not started answering well past its usual time to first
token, ask it again beside the first request and stream whichever answers first.

A stall before the first token is the model's most common failure that is not an error (a
request stuck in an overloaded server's queue), and the read timeout alone makes a customer
wait out each stall in turn: two in a row cost 16 s. Hedging turns that into a few seconds
(Dean and Barroso, "The Tail at Scale", 2013). The request still waiting is not abandoned: a
slow but healthy model still answers. Duplicate requests cost tokens, so hedges are bounded:
only after `after_s` and twice the recent p90 time to first token (a model that is always slow
is never hedged), at most `max_requests` requests for one attempt at a reply, and a process-wide
budget of one hedge per five requests plus a burst of 20 (as gRPC's retry throttling does).
Under a model's budget (bot/providers/budget.py) the wait for a turn comes before the hedge's
clock starts, and a hedge goes only if the budget has a turn for it at once (`admit_hedge`).
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bot.types import ProviderError, ReplyRequest, StreamEvent
from support_bot import metrics

from .base import Provider, close_stream

logger = logging.getLogger(__name__)


class HedgeBudget:
    """A token bucket: every request adds `ratio` of a token (up to `burst`), every hedge takes
    one. A provider that stalls everything is therefore asked at most ~(1 + ratio) times as
    often as without hedging, however long the outage."""

    def __init__(self, ratio: float = 0.2, burst: float = 20.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst
        self._lock = threading.Lock()

    def request_started(self) -> None:
        with self._lock:
            self._tokens = min(self.burst, self._tokens + self.ratio)

    def take(self) -> bool:
        with self._lock:
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class FirstTokenTimes:
    """Recent times to the first event, for a hedge delay that follows the model's own pace."""

    def __init__(self, size: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)

    def p90(self) -> float:
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 10:
            return 0.0
        return statistics.quantiles(samples, n=10)[-1]


@dataclass
class _Outcome:
    index: int
    events: Iterator[StreamEvent] | None
    first: StreamEvent | None
    error: BaseException | None
    seconds: float = 0.0  # from this request's start to its first event


class _Race:
    """The requests of one reply. Once a winner is chosen, a request that starts answering
    later closes its own stream; one that already had is closed by whoever chose."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decided = False
        self.outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()

    def report(self, outcome: _Outcome) -> None:
        with self.lock:
            if self.decided and outcome.events is not None:
                close_stream(outcome.events)
                return
            self.outcomes.put(outcome)

    def decide(self) -> None:
        """No more winners: close every stream that answered too late to be one."""
        with self.lock:
            self.decided = True
            while True:
                try:
                    late = self.outcomes.get_nowait()
                except queue.Empty:
                    return
                if late.events is not None:
                    close_stream(late.events)


class HedgedProvider(Provider):
    def __init__(
        self,
        provider: Provider,
        *,
        after_s: float,
        max_requests: int = 3,
        budget: HedgeBudget | None = None,
        admit_hedge: Callable[[ReplyRequest], bool] | None = None,
    ) -> None:
        self.provider = provider
        self.stand_in_for(provider)
        self.after_s = after_s
        self.max_requests = max_requests
        self.budget = budget or HedgeBudget()
        # Whether the model's budget has a turn for a hedge now (bot/providers/budget.py).
        self.admit_hedge = admit_hedge
        self.first_token_times = FirstTokenTimes()

    def hedge_delay(self) -> float:
        return max(self.after_s, 2 * self.first_token_times.p90())

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        if self.after_s <= 0:
            yield from self.provider.stream(request)
            return
        race = _Race()
        winner: _Outcome | None = None
        try:
            winner = self._first_to_answer(request, race)
            # The others are closed now, and one answering later at once: left open until
            # the winner's reply ends, a slow model would write them out in full.
            race.decide()
            assert winner.events is not None and winner.first is not None
            yield winner.first
            yield from winner.events
        finally:
            race.decide()
            if winner is not None and winner.events is not None:
                close_stream(winner.events)

    def _first_to_answer(self, request: ReplyRequest, race: _Race) -> _Outcome:
        """The first request to answer. The first error ends the attempt instead: a model that
        errors is the retry policy's to pace (Retry-After, back-off), and hedges only stand in
        for requests that are merely silent."""
        started = 0

        def start() -> None:
            nonlocal started
            self.budget.request_started()
            threading.Thread(
                target=self._ask, args=(request, started, race), daemon=True,
                name=f"hedge-{started}",
            ).start()  # fmt: skip
            started += 1

        start()
        delay = self.hedge_delay()
        next_hedge = time.monotonic() + delay
        while True:
            can_hedge = started < self.max_requests
            wait = max(0.0, next_hedge - time.monotonic()) if can_hedge else None
            try:
                outcome = race.outcomes.get(timeout=wait)
            except queue.Empty:
                if not self.budget.take():
                    logger.warning("the model is silent after %.1fs; no hedge budget", delay)
                elif self.admit_hedge is not None and not self.admit_hedge(request):
                    logger.warning(
                        "the model is silent after %.1fs; its budget has no turn for a hedge",
                        delay,
                    )
                else:
                    metrics.provider_hedged()
                    logger.warning("the model is silent after %.1fs: asked again", delay)
                    start()
                next_hedge = time.monotonic() + delay
                continue
            if outcome.error is not None:
                raise outcome.error
            self.first_token_times.add(outcome.seconds)
            return outcome

    def _ask(self, request: ReplyRequest, index: int, race: _Race) -> None:
        started_at = time.monotonic()
        events = self.provider.stream(request)
        try:
            first = next(events)
        except StopIteration:
            error = ProviderError("The model ended its reply before it began", code="empty")
            race.report(_Outcome(index, None, None, error))
        except BaseException as exc:  # noqa: BLE001 - handed to the reply's thread to raise
            race.report(_Outcome(index, None, None, exc))
        else:
            race.report(_Outcome(index, events, first, None, time.monotonic() - started_at))
