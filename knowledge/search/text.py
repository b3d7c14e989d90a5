"""Text as search sees it: articles cut into passages, passages into sentences, and words into
index terms.

- `split_markdown` / `article_passages`: an article's Markdown body cut into passages of about
  40-120 words along its headings and paragraphs. Each `Passage` knows its article.
- `passage_sentences`: a passage's sentences, for sentence embeddings.
- `Analyzer`: text to index terms (NFKC, lower case, English stopwords, Snowball stemming).
- `content_words`: what a question asks about, without stopwords and filler words ("hi,
  could you please tell me...").
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import Stemmer
from django.conf import settings

PASSAGE_MIN_WORDS = 40
PASSAGE_MAX_WORDS = 120

# Words that carry no topic in a customer's question ("hi, could you please help me ...").
# They are dropped from queries only; articles are indexed as written.
_FILLER_TEXT = """
    hi hello hey hiya howdy dear please pls plz thanks thank thx cheers help helping want
    wanted wanna need needed like would could might may must shall know knew tell told
    get getting got anyone someone somebody anybody something anything way ways possible
    question questions ok okay yes yeah yep good morning afternoon evening guys team able
    also still already actually really much many lot lots one ones since ever even else
    make made come comes go goes going try trying tried see look looking let lets take takes
    offer offers provide provides sell sells
    dont doesnt didnt cant cannot wont isnt arent wasnt werent havent hasnt hadnt wouldnt
    couldnt shouldnt im ive id youre thats whats wheres hows theres us
"""
QUERY_FILLER_WORDS = frozenset(_FILLER_TEXT.split())


# --- Passages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """A piece of an article: the unit that is indexed, retrieved and answered from."""

    article_id: int
    title: str
    url: str
    text: str  # Markdown, without the heading it starts under
    heading: str = ""  # the section heading the passage starts under ("" for the intro)
    position: int = 0  # order within the article
    tags: tuple[str, ...] = ()
    # The article's language code (Article.language: "en", "de", "pt-BR"), "" when unknown: a
    # question in the same language (knowledge.language.detect_language) is a signal retrieval
    # may use.
    language: str = ""

    @property
    def indexed_text(self) -> str:
        """Title, heading and text: what a retriever should see of the passage."""
        return "\n".join(part for part in (self.title, self.heading, self.text) if part)


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”')\]]*\s+(?=[\"“(\[*]?[A-Z0-9])")
TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def is_table_start(lines: list[str], i: int) -> bool:
    """Whether lines[i] is a Markdown table's header: cells, then a separator row."""
    return (
        "|" in lines[i]
        and i + 1 < len(lines)
        and "|" in lines[i + 1]
        and bool(TABLE_SEPARATOR.match(lines[i + 1]))
    )


@dataclass
class _Block:
    kind: str  # "heading", "list", "text" or "code"
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def words(self) -> int:
        return len(self.text.split())


def _blocks(markdown: str) -> list[_Block]:
    """Headings, paragraphs, lists, tables and code fences, in order."""
    blocks: list[_Block] = []
    current: _Block | None = None
    fence: str | None = None
    lines = [raw.rstrip() for raw in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    for i, line in enumerate(lines):
        if fence is not None:
            assert current is not None
            current.lines.append(line)
            if line.strip().startswith(fence):
                fence, current = None, None
            continue
        fence_match = _FENCE.match(line)
        if fence_match:
            fence = fence_match.group(1)
            current = _Block("code", [line])
            blocks.append(current)
            continue
        if not line.strip():
            current = None
            continue
        if current is not None and current.kind == "table":
            if "|" in line:
                current.lines.append(line)
                continue
            current = None  # a line without a cell ends the table
        if is_table_start(lines, i):
            current = _Block("table", [line])  # its header; the separator and rows follow
            blocks.append(current)
            continue
        heading = _HEADING.match(line)
        if heading:
            blocks.append(_Block("heading", [heading.group(2)]))
            current = None
            continue
        is_item = bool(_LIST_ITEM.match(line))
        if current is not None and (current.kind == "list" or not is_item):
            current.lines.append(line)  # list continuation lines stay with their list
        else:
            current = _Block("list" if is_item else "text", [line])
            blocks.append(current)
    return blocks


def _split_long(block: _Block, max_words: int) -> list[_Block]:
    """Cut a block longer than max_words into list items, table rows or sentences, grouped
    back up. Each piece of a table keeps the header, so it still says what is what."""
    if block.kind == "table":
        head, rows = block.lines[:2], block.lines[2:]
        tables: list[_Block] = []
        for row in rows:
            if tables and tables[-1].words + len(row.split()) <= max_words:
                tables[-1].lines.append(row)
            else:
                tables.append(_Block("table", [*head, row]))
        return tables or [block]
    if block.kind == "list":
        units: list[str] = []
        for line in block.lines:
            if _LIST_ITEM.match(line) or not units:
                units.append(line)
            else:
                units[-1] += "\n" + line
        joiner = "\n"
    elif block.kind == "text":
        units = [s for s in _SENTENCE_END.split(" ".join(block.lines)) if s.strip()]
        joiner = " "
    else:
        return [block]
    pieces: list[_Block] = []
    words = 0
    for unit in units:
        unit_words = len(unit.split())
        if pieces and words + unit_words <= max_words:
            pieces[-1].lines[-1] += joiner + unit
            words += unit_words
        else:
            pieces.append(_Block(block.kind, [unit]))
            words = unit_words
    for piece in pieces:
        piece.lines = piece.text.split("\n")
    return pieces


def split_markdown(
    markdown: str, *, min_words: int = PASSAGE_MIN_WORDS, max_words: int = PASSAGE_MAX_WORDS
) -> list[tuple[str, str]]:
    """Cut a Markdown body into (heading, text) passages of about min..max words.

    Headings start a new passage once the current one has min_words; a short section is kept
    with the next one (its heading stays in the text as a `## Heading` line). Paragraphs and
    lists are never cut unless a single one is longer than max_words.
    """
    passages: list[tuple[str, str]] = []
    parts: list[str] = []
    words = 0
    heading = ""  # the heading the current passage starts under
    section = ""  # the heading of the section we are in

    def flush() -> None:
        nonlocal parts, words
        if parts:
            passages.append((heading, "\n\n".join(parts)))
        parts, words = [], 0

    for block in _blocks(markdown):
        if block.kind == "heading":
            section = block.text
            if words >= min_words:
                flush()
            if not parts:
                heading = section
            else:
                parts.append(f"## {section}")
            continue
        pieces = [block] if block.words <= max_words else _split_long(block, max_words)
        for piece in pieces:
            if parts and words >= min_words and words + piece.words > max_words:
                flush()
                heading = section
            parts.append(piece.text)
            words += piece.words
    if parts and words < min_words and passages:
        # A short tail joins the passage before it rather than standing alone.
        last_heading, last_text = passages.pop()
        tail = "\n\n".join(parts if heading == last_heading else [f"## {heading}", *parts])
        passages.append((last_heading, f"{last_text}\n\n{tail}"))
    else:
        flush()
    return passages


def article_passages(
    article_id: int,
    title: str,
    body: str,
    url: str = "",
    tags: Iterable[str] = (),
) -> list[Passage]:
    tags = tuple(tags)
    return [
        Passage(article_id, title, url, text, heading, position, tags)
        for position, (heading, text) in enumerate(split_markdown(body))
    ]


_MARKDOWN_LINE_START = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d{1,3}[.)]\s+|>\s*)")
_MARKDOWN_EMPHASIS = re.compile(r"[*_`]+")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
MAX_SENTENCES_PER_PASSAGE = 16


def passage_sentences(text: str) -> list[str]:
    """The sentences (and list items) of a passage, as plain text, for sentence embeddings:
    at least 3 words each, at most MAX_SENTENCES_PER_PASSAGE of them."""
    sentences: list[str] = []
    for line in text.split("\n"):
        line = _MARKDOWN_LINE_START.sub("", line)
        line = _MARKDOWN_EMPHASIS.sub("", _MARKDOWN_LINK.sub(r"\1", line)).strip()
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            if len(sentence.split()) >= 3:
                sentences.append(sentence[:400])
    return sentences[:MAX_SENTENCES_PER_PASSAGE]


# --- Text analysis -------------------------------------------------------------------------

_HTML_TAG = re.compile(r"<[^>\n]{0,200}>")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_BARE_URL = re.compile(r"https?://\S+")
_PLAIN_WORD = re.compile(r"[^\W_]+")
_HYPHENATED = re.compile(r"[^\W_]+(?:-[^\W_]+)+")
_POSSESSIVE = re.compile(r"(?<=[^\W_])'s\b")
_HYPHENS = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2019": "'", "\u2018": "'", "`": "'"})


class Analyzer:
    """Text to terms: NFKC, lower case, words (hyphenated words also joined: wi-fi -> wifi),
    English stopwords removed, Snowball-stemmed. The same analysis runs on passages and on
    questions, so their terms meet."""

    def __init__(self, stopwords: Iterable[str] | None = None, language: str = "english"):
        self._given_stopwords = None if stopwords is None else frozenset(stopwords)
        self.language = language
        self._local = threading.local()  # PyStemmer stemmers are not thread-safe
        self._stems: dict[str, str] = {}  # word -> stem, for every thread

    @cached_property
    def stopwords(self) -> frozenset[str]:
        """The given ones, or bm25s's English list: read at first use, since importing bm25s
        brings scipy (a quarter of a second) into processes that never analyse text."""
        if self._given_stopwords is not None:
            return self._given_stopwords
        from bm25s.stopwords import STOPWORDS_EN_PLUS

        return frozenset(STOPWORDS_EN_PLUS)

    def _stemmer(self) -> Any:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer(self.language)
            stemmer.maxCacheSize = 0  # self._stems caches, faster and shared by threads
        return stemmer

    def words(self, text: str) -> list[str]:
        """Lower-case content words (before stemming), as a bag: "wi-fi" gives wi, fi and wifi,
        "device's" gives device."""
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text).translate(_HYPHENS)
        text = text.lower()
        if "<" in text or "http" in text or "](" in text:
            text = _BARE_URL.sub(" ", _LINK_TARGET.sub("]", _HTML_TAG.sub(" ", text)))
        if "'" in text:
            text = _POSSESSIVE.sub("", text)
        tokens = _PLAIN_WORD.findall(text)
        if "-" in text:
            tokens += [word.replace("-", "") for word in _HYPHENATED.findall(text)]
        stopwords = self.stopwords
        return [token for token in tokens if len(token) > 1 and token not in stopwords]

    def stem(self, words: list[str]) -> list[str]:
        cache = self._stems
        known: dict[str, str] = {}
        missing: list[str] = []
        for word in set(words):
            stem = cache.get(word)
            if stem is None:
                missing.append(word)
            else:
                known[word] = stem
        if missing:
            new = dict(zip(missing, self._stemmer().stemWords(missing), strict=True))
            known.update(new)
            if len(cache) > 200_000:
                cache.clear()
            cache.update(new)
        return [known[word] for word in words]

    def terms(self, text: str) -> list[str]:
        return self.stem(self.words(text))


DEFAULT_ANALYZER = Analyzer()


def analyze(text: str) -> list[str]:
    """The index terms of a text, as the default index sees them."""
    return DEFAULT_ANALYZER.terms(text)


def content_words(query: str) -> list[str]:
    """The words of a question that can be searched for (no stopwords or filler words).
    Empty for "hi", "??" or "can you help me?"."""
    return [w for w in DEFAULT_ANALYZER.words(query[:2000]) if w not in filler_words()]


_fillers_cache: tuple[str, frozenset[str]] | None = None


def filler_words() -> frozenset[str]:
    """QUERY_FILLER_WORDS plus the words of the company name (present in every article)."""
    global _fillers_cache
    company = str(settings.COMPANY_NAME)
    if _fillers_cache is None or _fillers_cache[0] != company:
        words = set(QUERY_FILLER_WORDS) | set(DEFAULT_ANALYZER.words(company))
        _fillers_cache = (company, frozenset(words))
    return _fillers_cache[1]
