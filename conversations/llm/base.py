"""The one interface every model provider implements.

A provider turns a ReplyRequest into a stream of events: text deltas as they are generated, then
exactly one Finished with usage and sources. Errors are ProviderError; `permanent` says whether
trying again could help (a 429 or a dropped stream can, a 401 or a bad request cannot).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class Source:
    title: str
    url: str = ""
    article_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"title": self.title, "url": self.url, "article_id": self.article_id}


@dataclass(frozen=True)
class ReplyRequest:
    messages: list[ChatMessage]
    model: str = ""
    temperature: float = 0.3
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    model: str
    prompt_tokens: int
    completion_tokens: int
    sources: list[Source] = field(default_factory=list)
    # True when the provider could not answer from what it knows and offered a human instead.
    abstained: bool = False


StreamEvent = TextDelta | Finished


class ProviderError(Exception):
    """A provider call failed. `retry_after` is the provider's own hint, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        code: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code


class Provider(ABC):
    name: str = "provider"

    @abstractmethod
    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        """Yield TextDelta events, then exactly one Finished. Raise ProviderError on failure."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token in English) for offline use."""
    return max(1, (len(text) + 3) // 4) if text else 0
