"""The offline answerer: answers from the help articles alone, with no model.

It answers from the passages bot/grounding.py found for the message (the same ones,
numbered the same way, that a model would get), or says it doesn't know when grounding found
nothing good enough. An answer reads like an agent's: a lead-in, the best passage's own
sentences and list items that bear on the question (steps kept whole and in order), and a
pointer to the article, plus "you may also find ... helpful" when the second passage, from
another article, matches nearly as well. Everything factual in an answer is copied from an
article; the only words of its own are the lead-in, the pointers, small talk and the "I don't
know" reply, in the customer's language (bot/wording.py). The reply streams word by word, like
a model's would.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bot.grounding import Search, ground
from bot.small_talk import small_talk_reply
from bot.types import (
    ChatMessage,
    Finished,
    Knowledge,
    KnowledgePassage,
    ReplyRequest,
    Source,
    StreamEvent,
    estimate_tokens,
)
from bot.wording import Wording, wording_for
from knowledge import search as knowledge_search
from knowledge.search import QueryTerm
from knowledge.search.text import TABLE_SEPARATOR, is_table_start

from .base import Provider, paced_words

MODEL = "offline-bm25"

# Confidence this far above the threshold gets a plain answer; below, a hedged one.
HEDGE_MARGIN = 0.15
MAX_ANSWER_WORDS = 90  # of sentences picked for their overlap; a whole list may add more
MAX_LIST_ITEMS = 8
MAX_TABLE_ROWS = 4  # of a table's rows that answer; a row is shown under its header
# The second passage earns a "see also" with at least this share of the best one's retrieval
# score, and a confidence at most this much lower.
SEE_ALSO_SCORE_RATIO = 0.8
SEE_ALSO_CONFIDENCE_GAP = 0.1


# --- Answers from a passage ---------------------------------------------------------------

_LIST_ITEM = re.compile(r"^\s*([-*+]|\d{1,3}[.)])\s+(.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”')\]]*\s+(?=[\"“(\[]?[A-Z0-9])")
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> their text
    (re.compile(r"<[^>\n]{0,200}>"), ""),  # HTML tags
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),  # italics
    (re.compile(r"`([^`]*)`"), r"\1"),  # code
]


def plain(markdown_line: str) -> str:
    """Inline Markdown (and stray HTML tags) to plain text."""
    text = markdown_line
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return re.sub(r"\s+", " ", text).strip()


_NUMBERED_STEP = re.compile(r"^\d{1,3}[.)] ", re.M)
_INTRODUCES_LIST = re.compile(r":$|\b(?:these|the following|following) steps\b|\bbelow\b")
_DURATION_QUESTION = re.compile(
    r"\bhow (?:long|soon|quickly|fast)\b|\bwhen\b|\bhow many days\b", re.I
)
_DURATION = re.compile(
    r"\b\d+(?:[–-]\d+)?\s*(?:business |working |calendar )?"
    r"(?:days?|hours?|minutes?|weeks?|months?|years?)\b|\b(?:same|next) (?:business )?day\b",
    re.I,
)
_AMOUNT_QUESTION = re.compile(r"\bhow much\b|\bcosts?\b|\bprices?\b|\bfees?\b|\bfree\b", re.I)
_AMOUNT = re.compile(r"[€$£]\s?\d|\d\s?(?:euros?|eur|dollars?|usd|gbp)\b|\bfree\b", re.I)


def _answer_type(question: str) -> re.Pattern[str] | None:
    """What kind of fact a question asks for, as a pattern a sentence giving it would match."""
    if _AMOUNT_QUESTION.search(question):
        return _AMOUNT
    if _DURATION_QUESTION.search(question):
        return _DURATION
    return None


@dataclass
class _Unit:
    """A sentence or a list item of a passage."""

    text: str
    block: int  # which paragraph or list it belongs to
    is_item: bool
    marker: str = ""  # "1." or "-" for list items
    # A table row: its cells, and the table's header cells (the row is shown under them).
    cells: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    heading: str = ""  # set on the first paragraph or list under a heading
    terms: set[str] = field(default_factory=set)
    heading_terms: set[str] = field(default_factory=set)

    @property
    def words(self) -> int:
        return len(self.text.split())


def _cells(line: str) -> tuple[str, ...]:
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return tuple(plain(cell.replace("\\|", "|")) for cell in re.split(r"(?<!\\)\|", row))


def _units(markdown: str, heading: str = "") -> list[_Unit]:
    units: list[_Unit] = []
    block = 0
    paragraph: list[str] = []
    in_list = False
    pending_heading = heading  # goes to the next block that starts
    header: tuple[str, ...] | None = None  # inside a table: its header cells
    table_heading = ""

    def new_block() -> str:
        nonlocal pending_heading
        taken, pending_heading = pending_heading, ""
        return taken

    def end_paragraph() -> None:
        nonlocal paragraph, block
        if paragraph:
            text = plain(" ".join(paragraph))
            block_heading = new_block()
            for sentence in _SENTENCE_END.split(text):
                if sentence.strip():
                    units.append(_Unit(sentence.strip(), block, False, heading=block_heading))
            block += 1
        paragraph = []

    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        if header is not None:
            if "|" in line and line.strip():
                if not TABLE_SEPARATOR.match(line):
                    cells = _cells(line)
                    units.append(
                        _Unit(
                            " ".join(cells),
                            block,
                            False,
                            heading=table_heading,
                            cells=cells,
                            header=header,
                        )
                    )
                continue
            header, block = None, block + 1
        if is_table_start(lines, i):
            end_paragraph()
            if in_list:
                block, in_list = block + 1, False
            header, table_heading = _cells(line), new_block()
            continue
        item = _LIST_ITEM.match(line)
        is_heading = bool(_HEADING.match(line))
        if not line.strip() or is_heading or line.lstrip().startswith(("```", "~~~")):
            end_paragraph()
            if in_list:
                block, in_list = block + 1, False
            if is_heading:
                pending_heading = plain(_HEADING.sub("", line))
            continue
        if item:
            end_paragraph()
            marker = item.group(1)
            if not in_list:
                list_heading = new_block()
            units.append(
                _Unit(
                    plain(item.group(2)),
                    block,
                    True,
                    marker if marker[0].isdigit() else "-",
                    heading=list_heading,
                )
            )
            in_list = True
        elif in_list and units and units[-1].is_item and line.startswith((" ", "\t")):
            units[-1].text = plain(f"{units[-1].text} {line}")  # an item's continuation line
        else:
            if in_list:
                block, in_list = block + 1, False
            paragraph.append(line.strip())
    end_paragraph()
    for unit in units:
        unit.terms = set(knowledge_search.analyze(unit.text))
        context = " ".join((unit.heading, *unit.header))
        unit.heading_terms = set(knowledge_search.analyze(context)) if context.strip() else set()
    return [unit for unit in units if unit.text]


def extract_answer(
    passage_markdown: str,
    terms: Sequence[QueryTerm],
    *,
    heading: str = "",
    title: str = "",
    question: str = "",
) -> str:
    """The sentences and list items of a passage that bear on the question, in document order,
    as plain text ("" if the passage has no text).

    A unit (sentence or list item) scores the weights of the question's words it contains
    (QueryTerm.weight_in), counting the first paragraph or list under a heading as containing
    the heading's words too. Words of the article's title count half (the title found the
    article; the answer is in what the body adds), and "how long"/"how much" questions favour
    units with a duration/an amount. The best unit is
    kept, with others scoring at least half as much in the same or a neighbouring block (80%
    elsewhere) while the answer stays short. A list is kept whole when any of its items, or the
    sentence introducing it, is kept: steps are never shown out of context.
    """
    units = _units(passage_markdown, heading)
    if not units:
        return ""
    title_terms = set(knowledge_search.analyze(title))

    def score(unit: _Unit) -> float:
        total = 0.0
        own = False  # a table row answers only if its own cells say something asked
        for term in terms:
            in_unit = term.weight_in(unit.terms)
            here = in_unit or term.weight_in(unit.heading_terms)
            own = own or in_unit > 0
            total += here * (0.5 if term.weight_in(title_terms) else 1.0)
        return total if own or not unit.cells else 0.0

    scores = [score(unit) for unit in units]
    wanted = _answer_type(question)
    if wanted is not None and terms:
        bonus = 0.5 * max(term.weight for term in terms)
        scores = [
            score + bonus if score > 0 and wanted.search(unit.text) else score
            for score, unit in zip(scores, units, strict=True)
        ]
    best = max(scores)
    chosen: set[int] = set()
    words = 0
    if best <= 0:
        # The match came from the title alone: the passage's opening sentences answer.
        for i, unit in enumerate(units):
            if i and (words + unit.words > MAX_ANSWER_WORDS // 2 or unit.block != units[0].block):
                break
            chosen.add(i)
            words += unit.words
    else:
        ranked = sorted(range(len(units)), key=lambda i: (-scores[i], i))
        near = {units[ranked[0]].block + step for step in (-1, 0, 1)}
        for i in ranked:
            if scores[i] <= 0 or scores[i] < 0.5 * best:
                break
            if units[i].block not in near and scores[i] < 0.8 * best:
                continue
            if chosen and words + units[i].words > MAX_ANSWER_WORDS:
                continue
            if units[i].cells and (
                scores[i] < 0.8 * best
                or sum(units[j].block == units[i].block for j in chosen) >= MAX_TABLE_ROWS
            ):
                continue
            chosen.add(i)
            words += units[i].words

    # Whole lists, with the sentence that introduces them.
    for i in sorted(chosen):
        unit = units[i]
        if unit.cells:
            continue
        if unit.is_item:
            list_block = unit.block
        else:
            paragraph = [j for j, u in enumerate(units) if u.block == unit.block]
            last = units[paragraph[-1]]
            if not _INTRODUCES_LIST.search(last.text):
                continue
            chosen.add(paragraph[-1])
            list_block = unit.block + 1
        members = [j for j, u in enumerate(units) if u.block == list_block and u.is_item]
        if len(members) <= MAX_LIST_ITEMS:
            chosen.update(members)
        before = members[0] - 1 if members else -1
        if (
            before >= 0
            and not units[before].is_item
            and _INTRODUCES_LIST.search(units[before].text)
        ):
            chosen.add(before)

    lines: list[str] = []
    previous: _Unit | None = None
    in_order = sorted(chosen)
    for position, i in enumerate(in_order):
        unit = units[i]
        if unit.heading.endswith("?") and (previous is None or previous.block != unit.block):
            lines.append(unit.heading)  # "Can I choose a delivery date?" gives "No." its sense
        if unit.cells:
            if previous is None or previous.block != unit.block:
                rows = [units[j] for j in in_order[position:] if units[j].block == unit.block]
                lines.extend(_table_lines(rows))
        elif unit.is_item:
            lines.append(f"{unit.marker} {unit.text}")
        elif previous is not None and not previous.is_item and previous.block == unit.block:
            lines[-1] += " " + unit.text
        else:
            lines.append(unit.text)
        previous = unit
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _table_lines(rows: Sequence[_Unit]) -> list[str]:
    """Table rows under their header: one row as a list of "header: value", several as a
    small Markdown table (a raw fragment of the article's table would not say what is what)."""
    header = rows[0].header
    if len(rows) == 1:
        pairs = zip(header, rows[0].cells, strict=False)
        return [f"- {name}: {value}" if name else f"- {value}" for name, value in pairs if value]

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    width = len(header)
    body = [row((*r.cells, *[""] * width)[:width]) for r in rows]
    return ["", row(header), "|" + "---|" * width, *body, ""]


@dataclass(frozen=True)
class OfflineAnswer:
    text: str
    sources: list[Source] = field(default_factory=list)
    abstained: bool = False
    context: str = ""  # the passage text the answer was built from


def _lead_in(question: str, body: str, wording: Wording) -> str:
    # The same question gets the same words (replies are reproducible); different questions
    # get some variety, as a person's answers would.
    choices = wording.step_lead_ins if _NUMBERED_STEP.search(body) else wording.lead_ins
    return choices[zlib.crc32(question.lower().encode()) % len(choices)]


def _see_also(knowledge: Knowledge) -> KnowledgePassage | None:
    """The second passage, when it is about as good a match as the first (another article,
    as retrieval gives one passage an article): worth a pointer, not an answer."""
    if len(knowledge.passages) < 2:
        return None
    best, second = knowledge.passages[0], knowledge.passages[1]
    if best.hit is None or second.hit is None or second.article_id == best.article_id:
        return None
    if (
        second.hit.score >= SEE_ALSO_SCORE_RATIO * best.hit.score
        and second.confidence >= best.confidence - SEE_ALSO_CONFIDENCE_GAP
    ):
        return second
    return None


def answer_from(knowledge: Knowledge) -> OfflineAnswer:
    """What the offline answerer says, given what the knowledge base has for the message
    (bot/grounding.py decides that, for every provider alike). Its own words come in the
    customer's language (knowledge.language), English when that is unknown or has no words
    (bot/wording.py); what it quotes is the article's."""
    wording = wording_for(knowledge.language)
    if knowledge.small_talk:
        return OfflineAnswer(small_talk_reply(set(knowledge.small_talk), wording))
    if knowledge.abstain:
        return OfflineAnswer(
            wording.no_answer(out_of_domain=knowledge.out_of_domain), abstained=True
        )
    if not knowledge.passages:
        return OfflineAnswer(wording.ask_for_detail)
    best = knowledge.passages[0]
    hit = best.hit
    passage_text = hit.text if hit is not None else best.text
    body = extract_answer(
        passage_text,
        hit.query_terms if hit is not None else (),
        heading=best.heading,
        title=best.title,
        question=knowledge.question,
    )
    sources = [best.source]
    if not body:
        return OfflineAnswer(
            wording.article_should_help.format(title=best.title), sources, context=passage_text
        )
    closing = wording.pointer.format(title=best.title)
    other = _see_also(knowledge)
    if other is not None:
        sources.append(other.source)
        closing += " " + wording.see_also.format(title=other.title)
    if best.confidence < knowledge.threshold + HEDGE_MARGIN:
        text = f"{wording.hedged_lead_in}\n\n{body}\n\n{closing} {wording.hedged_closing}"
    else:
        text = f"{_lead_in(knowledge.question, body, wording)}\n\n{body}\n\n{closing}"
    return OfflineAnswer(text, sources, context=passage_text)


def answer(question: str, search: Search | None = None) -> OfflineAnswer:
    """What the offline answerer says to a question on its own (without streaming it)."""
    return answer_from(ground([ChatMessage("user", question)], search))


class OfflineProvider(Provider):
    """Answers from the knowledge base with extractive answers from the grounded passages."""

    name = "offline"
    # It quotes whatever it is given: retrieval's confidence alone decides when it abstains.
    judges_passages = False

    def __init__(self, search: Search | None = None) -> None:
        # Used only for requests nobody grounded (the reply writer always grounds them).
        self._search = search

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        knowledge = request.knowledge
        if knowledge is None:
            # A knowledge base that can't be read raises a retryable ProviderError.
            knowledge = ground(request.messages, self._search)
        reply = answer_from(knowledge)
        yield from paced_words(reply.text, request.paced)
        prompt = "\n".join(message.content for message in request.messages)
        if reply.context:
            prompt += "\n" + reply.context
        yield Finished(
            model=MODEL,
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=estimate_tokens(reply.text),
            sources=reply.sources,
            abstained=reply.abstained,
        )
