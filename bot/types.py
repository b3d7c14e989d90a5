"""The values an answer is made of: the request a provider answers (messages, sampling, and
what the knowledge base contributes), the events it streams back, and its errors.

A provider (bot/providers/) turns a ReplyRequest into a stream of events: text deltas as they
are generated, then exactly one Finished with usage and sources. Errors are ProviderError;
`permanent` says whether trying again could help (a 429 or a dropped stream can, a 401 or a
bad request cannot).

What the knowledge base contributes is decided once, before any provider runs, by
bot/grounding.py, and travels in `ReplyRequest.knowledge`: the question, the numbered passages
the prompt offers ([1], [2], ...) and whether to abstain. Deciding it outside the providers is
what gives a model and the offline answerer the same passages, the same numbers and the same
"I don't know" rule, and what keeps retrieval out of the retry loop. A provider may name its
sources in Finished (the offline answerer knows which article it quoted); one that leaves them
empty gets the passages its text cites by number (grounding.cited_sources).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from knowledge.search import Hit

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class Source:
    """An article a reply is based on. `n` is the number the reply's text cites it by ("[2]")."""

    title: str
    url: str = ""
    article_id: int | None = None
    n: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "title": self.title, "url": self.url, "article_id": self.article_id}


@dataclass(frozen=True)
class KnowledgePassage:
    """A help-article passage offered for a reply, as the prompt numbers it."""

    n: int
    article_id: int
    title: str
    url: str
    # As the prompt carries it: the retrieved passage, cut at a sentence end if the token
    # budget (KB_PROMPT_TOKENS) did not hold all of it.
    text: str
    heading: str = ""
    confidence: float = 0.0
    # Retrieval's own hit (whole passage, the question's weighted terms, its score), for an
    # answerer that works on more than the prompt's text.
    hit: Hit | None = None

    @property
    def source(self) -> Source:
        return Source(self.title, self.url, self.article_id, self.n)


@dataclass(frozen=True)
class Knowledge:
    """What the knowledge base contributes to one reply (see bot/grounding.py).

    Exactly one of these holds: `small_talk` is set (a greeting, thanks: nothing to look up),
    `passages` has the passages to answer from, `abstain` is set (the message asks something
    the knowledge base has nothing good enough for: the reply must say so and offer a person,
    and no model is asked), or none of them (the message asks nothing that can be looked up,
    like "can you help me?").
    """

    question: str = ""  # what was searched for: the customer's message, or a follow-up in context
    passages: tuple[KnowledgePassage, ...] = ()
    abstain: bool = False
    # Abstaining because the message is not about the company at all (bot/scope.py): another
    # company's product, general knowledge, an attempt to change the bot's instructions.
    out_of_domain: bool = False
    small_talk: frozenset[str] = frozenset()  # offline.small_talk_kinds of the message
    threshold: float = 0.0  # the confidence passages needed (KB_MIN_CONFIDENCE)
    # The language the customer writes in (bot.wording.customer_language: ISO 639-1, None
    # when their messages don't tell): the bot's own words and the prompt's {language}.
    language: str | None = None


@dataclass(frozen=True)
class ModelLimits:
    """A model account's budget a minute (bot/providers/budget.py). None: the environment's
    (OPENAI_REQUESTS_PER_MIN, OPENAI_TOKENS_PER_MIN); 0: no limit."""

    requests_per_min: int | None = None
    tokens_per_min: int | None = None


@dataclass(frozen=True)
class BudgetWait:
    """How a caller waits when the model's budget is spent (bot/providers/budget.py). Without
    one, a request waits silently, up to REPLY_DEADLINE_S."""

    deadline: float | None = None  # time.monotonic(): a turn after it is refused at once
    # From this time.monotonic() on, a wait still going is announced, once, to on_notice (with
    # the seconds still to wait).
    notice_at: float | None = None
    on_notice: Callable[[float], object] | None = None
    # Read while waiting: True stops the wait (the reply was taken over).
    cancelled: Callable[[], bool] | None = None
    # When the customer asked (time.time()): the request's place in the queue for turns, so
    # the first to ask goes first whenever its prompt is ready. None: when it books.
    asked_at: float | None = None
    # The place in line its customer held while the request was prepared (Provider.in_line):
    # it books once nobody who asked before it is still being prepared.
    place: str | None = None


@dataclass(frozen=True)
class PlaceInLine:
    """A request being prepared (retrieval, the prompt) for a model whose budget is metered:
    `ticket` holds its customer's place, by `asked_at` (time.time()), until it is ready to
    book a turn (bot/providers/budget.py)."""

    ticket: str
    asked_at: float
    model: str
    limits: ModelLimits


@dataclass(frozen=True)
class ReplyRequest:
    messages: list[ChatMessage]
    model: str = ""
    temperature: float = 0.3
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    # None: not sent (the server's default).
    top_p: float | None = None
    # None: nobody grounded this request (a provider called directly); the offline answerer
    # then grounds it itself.
    knowledge: Knowledge | None = None
    # Whether the bot's own words (the offline answerer's, an abstention) stream at a reading
    # pace like a model's; off when nobody watches the answer stream (bot/run.py).
    paced: bool = True
    # The model account's budget for this request (a prompt version's, else the environment's)
    # and how its caller waits for it.
    limits: ModelLimits = field(default_factory=ModelLimits)
    budget_wait: BudgetWait | None = None


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


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token in English) for offline use."""
    return max(1, (len(text) + 3) // 4) if text else 0
