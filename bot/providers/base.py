"""The one interface every model provider implements, and what all of them share."""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

from django.conf import settings

from bot.types import PlaceInLine, ReplyRequest, StreamEvent, TextDelta


class Provider(ABC):
    name: str = "provider"
    # Whether it tells passages that answer from look-alikes that don't (a model replies the
    # no-answer marker), so passages retrieval is unsure of may go to it (bot/grounding.py).
    judges_passages: bool = True
    # Whether its stream comes over a socket, which keeps what arrives while nobody reads: a
    # watched answer then reads it a piece at a time instead of a token at a time (bot/run.py).
    streams_over_network: bool = False

    def stand_in_for(self, provider: Provider) -> None:
        """For a provider that wraps another (a guard, the budget, hedging): look like it."""
        self.name = provider.name
        self.judges_passages = provider.judges_passages
        self.streams_over_network = provider.streams_over_network

    @abstractmethod
    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        """Yield TextDelta events, then exactly one Finished. Raise ProviderError on failure."""

    @contextlib.contextmanager
    def in_line(self, place: PlaceInLine) -> Iterator[None]:
        """Held while a request is prepared: a metered provider keeps its customer's place in
        the queue for the model's budget (BudgetedProvider), and leaves it after (booked,
        cancelled, or no model needed)."""
        self.hold_place(place)
        try:
            yield
        finally:
            self.leave_line(place)

    def hold_place(self, place: PlaceInLine) -> None:
        """Take or renew a customer's place in that queue; taken first when their message is
        stored, before any worker has it. Others have no queue."""
        return None

    def leave_line(self, place: PlaceInLine) -> None:
        """Give the place up."""
        return None


def close_stream(events: Iterator[StreamEvent]) -> None:
    """End a provider's stream now, and with it its HTTP request, rather than when the
    generator is collected (a reply stopped early, or an error)."""
    close = getattr(events, "close", None)
    if close is not None:
        close()


def stream_words(text: str) -> list[str]:
    """The pieces a reply streams in: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text)


def paced_words(text: str, paced: bool = True) -> Iterator[TextDelta]:
    """A text streamed word by word, at OFFLINE_WORD_DELAY_MS when `paced`, like a model's
    reply (the bot's own words: the offline answerer's answers, an abstention)."""
    delay = max(0.0, float(settings.OFFLINE_WORD_DELAY_MS)) / 1000 if paced else 0.0
    for i, piece in enumerate(stream_words(text)):
        if i and delay:
            time.sleep(delay)
        yield TextDelta(piece)
