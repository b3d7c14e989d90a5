"""What the knowledge base contributes to a reply: decided once, here, for every provider.

`ground(messages)` reads the customer's latest message and returns a `Knowledge` (bot/types.py):

- small talk ("hi", "thanks!") looks nothing up and never abstains;
- a message with nothing to look up ("can you help me?") is not a question the knowledge base
  could fail: it neither searches nor abstains (the answerer asks what the customer needs);
- anything else is searched (KB_PROMPT_PASSAGES hits, one per article) and only hits with
  enough confidence count: KB_MIN_CONFIDENCE for the offline answerer, which quotes whatever
  it is given, and the lower KB_MODEL_MIN_CONFIDENCE for a model, which reads the passages and
  replies the no-answer marker when they don't answer, so that it decides the unsure ones.
  None left means abstain: the reply says plainly that the help articles don't cover it and
  offers a person, and no model is asked at all, so nothing can be invented and nothing is
  paid for (bot/guards.py);
- a short follow-up that points back ("how much does it cost?", "can I cancel it?") is searched
  together with the customer's previous message first, since on its own "it" finds the wrong
  article or none; if that finds nothing good enough, the follow-up is searched alone.

The language the customer writes in (bot.wording.customer_language) goes with it, for the bot's
own words and the prompt's {language}.

The hits become numbered passages [1]..[n] that fit the prompt version's knowledge budget
(estimated tokens, so the prompt stays bounded whatever the articles' length): a passage that
doesn't fit whole is cut at a sentence end or dropped, and the best one is always kept. The
prompt (bot/prompt.py) shows them with the rules, and `cited_sources` maps the [n] markers of
the model's answer back to articles.

Sources are only what an answer cites: a passage offered to the model but not cited is not
shown as a source (the page must not claim an answer rests on an article it didn't use). The
reply writer logs such answers, since an uncited answer may also be an unfounded one.

Retrieval runs once a reply, not once an attempt: the reply writer builds the request before
its retry loop, and the offline answerer answers from the same passages instead of searching
again. A knowledge base that can't be read is a ProviderError worth retrying.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import DatabaseError

from bot.scope import is_prompt_injection
from bot.small_talk import small_talk_kinds, small_talk_language
from bot.types import (
    ChatMessage,
    Knowledge,
    KnowledgePassage,
    ProviderError,
    Source,
    estimate_tokens,
)
from bot.wording import customer_language
from knowledge import search as knowledge_search
from knowledge.search import Hit

Search = Callable[[str, int], list[Hit]]

# --- The question ---------------------------------------------------------------------------

# Words that point back at something said before. Short messages only: in a long message they
# usually point inside the message itself.
_POINTS_BACK = re.compile(r"\b(?:it|its|that|this|they|them|those|these)\b", re.I)
FOLLOW_UP_MAX_WORDS = 8


def is_follow_up(message: str) -> bool:
    """Whether a message reads as a follow-up that needs the message before it to make sense
    ("how much does it cost?", "can I cancel that?")."""
    return len(message.split()) <= FOLLOW_UP_MAX_WORDS and bool(_POINTS_BACK.search(message))


def min_confidence(judged_by_model: bool) -> float:
    """The confidence a passage needs to be used: KB_MIN_CONFIDENCE for the offline answerer,
    the lower KB_MODEL_MIN_CONFIDENCE when a model judges the passages itself (it replies the
    no-answer marker when they don't answer), so that it, not retrieval, decides the unsure
    ones."""
    if judged_by_model:
        return float(settings.KB_MODEL_MIN_CONFIDENCE)
    return knowledge_search.min_confidence()


def ground(
    messages: Sequence[ChatMessage],
    search: Search | None = None,
    budget: int | None = None,
    *,
    threshold: float | None = None,
) -> Knowledge:
    """What the knowledge base has for the customer's latest message (see the module doc).
    `budget`: the passages' estimated tokens (a prompt version's knowledge_tokens); default
    KB_PROMPT_TOKENS. `threshold`: the confidence a passage needs (min_confidence); default
    the offline answerer's, KB_MIN_CONFIDENCE."""
    asked = [m.content.strip() for m in messages if m.role == "user"]
    message = asked[-1] if asked else ""
    if threshold is None:
        threshold = knowledge_search.min_confidence()
    language = customer_language(asked)
    kinds = small_talk_kinds(message)
    if kinds:
        return Knowledge(
            question=message,
            small_talk=frozenset(kinds),
            threshold=threshold,
            language=small_talk_language(message) or language,
        )

    if is_prompt_injection(message):
        return Knowledge(
            question=message,
            abstain=True,
            out_of_domain=True,
            threshold=threshold,
            language=language,
        )

    queries = [message]
    if len(asked) >= 2 and is_follow_up(message):
        queries.insert(0, f"{asked[-2]}\n{message}")
    searched = False
    for query in queries:
        if not knowledge_search.content_words(query):
            continue
        searched = True
        good = [hit for hit in _search(search, query) if hit.confidence >= threshold]
        if good:
            passages = number_passages(good, budget or settings.KB_PROMPT_TOKENS)
            return Knowledge(
                question=query, passages=passages, threshold=threshold, language=language
            )
    return Knowledge(question=message, abstain=searched, threshold=threshold, language=language)


def _search(search: Search | None, query: str) -> list[Hit]:
    try:
        return (search or knowledge_search.search)(query, settings.KB_PROMPT_PASSAGES)
    except DatabaseError as exc:
        raise ProviderError(
            f"the knowledge base could not be read: {exc}", code="knowledge_unavailable"
        ) from exc


# --- Passages within a token budget ----------------------------------------------------------


def passage_header(n: int, title: str, heading: str) -> str:
    return f"[{n}] {title}" + (f" — {heading}" if heading else "")


# Where a passage may be cut: after a sentence's end, or at the end of a line that a blank
# line, a list item or a heading follows (list items often have no full stop).
_CUT = re.compile(
    r"(?<=[.!?])[\"”')\]*_]*(?=\s)"
    r"|\n(?=[ \t]*(?:\n|[-*+][ \t]|\d{1,3}[.)][ \t]|#))"
)


def cut_to_fit(text: str, tokens: int) -> str:
    """The longest start of a Markdown text that ends a sentence (or a list item) and has at
    most `tokens` estimated tokens; "" if not even the first sentence fits."""
    text = text.strip()
    if estimate_tokens(text) <= tokens:
        return text
    best = ""
    for match in _CUT.finditer(text):
        start = text[: match.end()].rstrip()
        if estimate_tokens(start) > tokens:
            break
        best = start
    return best


def _cut_words(text: str, tokens: int) -> str:
    """The words of a text that fit, for when not even one sentence does."""
    words: list[str] = []
    for word in text.split():
        if estimate_tokens(" ".join([*words, word, "…"])) > tokens:
            break
        words.append(word)
    return " ".join(words) + " …" if words else ""


def number_passages(hits: Sequence[Hit], budget: int) -> tuple[KnowledgePassage, ...]:
    """Hits (best first) as numbered passages whose prompt entries fit `budget` tokens together.

    A passage that doesn't fit whole is cut at a sentence end, or dropped if not even one
    sentence fits (a later, shorter one may still fit). The best hit is always kept, cut to
    words if it must be: an answer needs at least one passage.
    """
    passages: list[KnowledgePassage] = []
    left = budget
    for hit in hits:
        n = len(passages) + 1
        header = passage_header(n, hit.title, hit.heading)
        # The entry is "header\ntext", and entries are joined by a blank line: charged here as
        # one more token each, so the joined section never estimates above the budget.
        room = left - estimate_tokens(header + "\n") - 1
        text = cut_to_fit(hit.text, room) if room > 0 else ""
        if not text and not passages:
            text = _cut_words(hit.text, max(room, 8)) or hit.text.split("\n", 1)[0]
        if not text:
            continue
        left -= estimate_tokens(f"{header}\n{text}") + 1
        passages.append(
            KnowledgePassage(
                n=n,
                article_id=hit.article_id,
                title=hit.title,
                url=hit.url,
                text=text,
                heading=hit.heading,
                confidence=hit.confidence,
                hit=hit,
            )
        )
    return tuple(passages)


# --- Citations ------------------------------------------------------------------------------

# "[1]", "[2, 3]", "[1][2]" (the last as two markers).
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_CITATION_WITH_SPACE = re.compile(r"[ \t]*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")


def cited_sources(text: str, passages: Sequence[KnowledgePassage]) -> list[Source]:
    """The articles an answer cites by passage number, in the order first cited, each once.

    Numbers no passage has ("[9]" of four) are ignored. Should two cited passages come from one
    article, the article is listed once, under the number it was first cited by.
    """
    by_number = {passage.n: passage for passage in passages}
    sources: list[Source] = []
    seen: set[int] = set()
    for match in _CITATION.finditer(text):
        for number in match.group(1).split(","):
            passage = by_number.get(int(number))
            if passage is None or passage.article_id in seen:
                continue
            seen.add(passage.article_id)
            sources.append(passage.source)
    return sources


def strip_citations(text: str) -> str:
    """An earlier answer without its [n] markers: in the history they would point at that
    answer's passages, not at the ones the new prompt numbers the same way."""
    return _CITATION_WITH_SPACE.sub("", text)
