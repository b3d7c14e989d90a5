"""Bulk ingestion of help articles from files: Markdown, plain text and HTML.

`ingest_paths` is what `manage.py ingest_kb PATH…` runs. The rules:

Files. Folders are walked recursively in name order; hidden files and folders (a name starting
with ".") are skipped; a file named explicitly is always considered. `.md`/`.markdown`,
`.txt` and `.html`/`.htm` are read (case-insensitive); other files are counted as unsupported.

Reading. A file must be UTF-8 (a BOM is fine) and at most KB_MAX_FILE_BYTES (default 2 MB).
A file that cannot be read (permissions, NUL bytes, invalid UTF-8), is too large, has front
matter that does not parse or an invalid field (slug, url, language), or has no text once
converted is skipped with a reason (`SkipReason`) and the other files still go in.

- Markdown: optional front matter (see knowledge.services); title from `title:`, else the
  leading `# Heading` (removed from the body), else the file name humanised.
- Text: optional front matter; the body is the text as it is. Title from `title:`, else the
  first non-empty line when it is short (at most TEXT_TITLE_MAX_CHARS, not ending like a
  sentence), else the file name humanised.
- HTML (stdlib html.parser): converted to Markdown. Title from <title>, else the first <h1>.
  Headings, paragraphs, line breaks, lists, <pre> (fenced code), inline <code>, links (only
  http, https and mailto targets; other links keep their text only), tables (a Markdown table),
  blockquotes. Dropped with their content: script, style, noscript, template, iframe, object,
  embed, svg, math, canvas, audio, video, select, textarea, nav, footer and the head (except
  its title and metadata). Attributes are never copied, so event handlers cannot survive.
  Metadata: <link rel="canonical"> (http/https) gives the url, <meta name="keywords"> the
  tags, <html lang> the language.

Identity. An article remembers the resolved absolute path of its file (`Article.source`):
ingesting the same file again updates that article, and when nothing changed nothing is
written (its `updated_at` stays, so nothing is re-indexed). When no article has come from the
file yet but an article with the file's slug exists that came from no file (written in the
admin, or loaded by `load_demo_kb`), the file takes that article over rather than adding a
second copy of it; the takeover is reported. Renaming or moving a file makes a new article.

Slugs. The front matter's `slug:`, else the file name slugified. When another article
already has it, the article gets the first free `slug-2`, `slug-3`…; re-ingesting keeps the
slug an article was given.

Published. `published:` in the front matter decides when present. Otherwise a new article is
published (or a draft with `published=False`, `ingest_kb --unpublished`), and an existing one
keeps the published flag it has (an operator may have unpublished it in the admin).

Language. `language:` in the front matter (or <html lang>), else the `language` argument
(`ingest_kb --language`), else the language the article already has, else "en".

Edits made in the admin to an article that came from a file are replaced by the file's text
the next time the file is ingested: the file is the source of truth.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from .models import Article
from .services import (
    SLUG_MAX_CHARS,
    URL_MAX_CHARS,
    EmptyArticleError,
    FrontMatterValue,
    KnowledgeLoadError,
    article_from_meta,
    clean_tags,
    is_language_code,
    parse_front_matter,
)

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = frozenset({".txt"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES

DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
SOURCE_MAX_CHARS = 1000  # Article.source
TEXT_TITLE_MAX_CHARS = 100


def max_file_bytes() -> int:
    """The largest file ingested (settings.KB_MAX_FILE_BYTES, default 2 MB)."""
    return int(getattr(settings, "KB_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES))


class SkipReason(StrEnum):
    UNREADABLE = "unreadable"  # permissions, not a regular file, binary, not UTF-8
    TOO_LARGE = "too large"
    NO_TEXT = "no text"  # nothing left to answer from once converted
    INVALID = "invalid"  # front matter or a field (slug, url, language) that is not valid


class FileSkipped(Exception):
    """A file that is not ingested, and why."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Document:
    """An article as read from one file, before it is stored."""

    path: Path  # resolved absolute path: the article's identity (Article.source)
    slug: str  # the slug it asks for (front matter's or from the file name)
    title: str
    body: str  # Markdown
    url: str = ""
    tags: list[str] = field(default_factory=list)
    language: str | None = None  # None: the file does not say
    published: bool | None = None  # None: the file does not say


# --- Reading files ------------------------------------------------------------------------


def read_document(path: Path, *, max_bytes: int | None = None) -> Document:
    """Read and convert one file. Raises FileSkipped with the reason it cannot be ingested."""
    limit = max_file_bytes() if max_bytes is None else max_bytes
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise FileSkipped(SkipReason.UNREADABLE, str(exc)) from None
    if len(str(resolved)) > SOURCE_MAX_CHARS:
        raise FileSkipped(SkipReason.INVALID, f"path longer than {SOURCE_MAX_CHARS} characters")
    text = _decode(_read_bytes(path, limit))
    suffix = path.suffix.lower()
    try:
        if suffix in HTML_SUFFIXES:
            meta, body = _html_meta_and_body(text)
        else:
            meta, body = parse_front_matter(text)
            if suffix in TEXT_SUFFIXES and "title" not in meta:
                meta, body = _text_title(meta, body)
        article = article_from_meta(
            meta,
            body,
            default_slug=slug_from_name(path.stem),
            default_title=humanise(path.stem),
        )
    except EmptyArticleError:
        raise FileSkipped(SkipReason.NO_TEXT, "the article is empty once converted") from None
    except KnowledgeLoadError as exc:
        raise FileSkipped(SkipReason.INVALID, str(exc)) from None
    return Document(
        path=resolved,
        slug=article.slug,
        title=article.title,
        body=article.body,
        url=article.url,
        tags=article.tags,
        language=article.language if "language" in meta else None,
        published=article.published if "published" in meta else None,
    )


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        raise FileSkipped(SkipReason.UNREADABLE, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise FileSkipped(SkipReason.UNREADABLE, "not a regular file")
    if info.st_size > limit:
        raise FileSkipped(SkipReason.TOO_LARGE, _too_large(info.st_size, limit))
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise FileSkipped(SkipReason.UNREADABLE, exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise FileSkipped(SkipReason.TOO_LARGE, _too_large(len(data), limit))
    return data


def _too_large(size: int, limit: int) -> str:
    shown, allowed = _human_size(size), _human_size(limit)
    if shown == allowed:
        shown, allowed = f"{size:,} bytes", f"{limit:,} bytes"
    return f"{shown}, over the limit of {allowed} (KB_MAX_FILE_BYTES)"


def _human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise FileSkipped(SkipReason.UNREADABLE, "binary file (contains NUL bytes), not UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileSkipped(
            SkipReason.UNREADABLE,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
        ) from None


def slug_from_name(stem: str) -> str:
    """A slug from a file name: "Gift Cards FAQ" -> "gift-cards-faq" ("article" if nothing is
    left, e.g. for a name in another script)."""
    slug = slugify(stem)[: SLUG_MAX_CHARS - 10].strip("-_")
    return slug or "article"


def humanise(stem: str) -> str:
    """A title from a file name: "gift-cards_faq" -> "Gift cards faq"."""
    words = " ".join(re.split(r"[\s_-]+", stem)).strip()
    return words[:1].upper() + words[1:] if words else "Untitled"


def _text_title(
    meta: dict[str, FrontMatterValue], body: str
) -> tuple[dict[str, FrontMatterValue], str]:
    """A plain text file's title: its first line when that reads as a title and text follows."""
    lines = body.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return meta, body
    candidate = lines[first].strip().lstrip("#").strip()
    rest = lines[first + 1 :]
    if rest and set(rest[0].strip()) in ({"="}, {"-"}):  # an underlined title
        rest = rest[1:]
    looks_like_title = 0 < len(candidate) <= TEXT_TITLE_MAX_CHARS and not candidate.endswith(
        (".", ",", ";", ":")
    )
    if looks_like_title and "\n".join(rest).strip():
        return {**meta, "title": candidate}, "\n".join(rest).strip("\n")
    return meta, body


def _html_meta_and_body(text: str) -> tuple[dict[str, FrontMatterValue], str]:
    document = html_to_markdown(text)
    meta: dict[str, FrontMatterValue] = {}
    if document.title:
        meta["title"] = document.title
    if document.url:
        meta["url"] = document.url
    if document.tags:
        meta["tags"] = document.tags
    if document.language:
        meta["language"] = document.language
    return meta, document.body


# --- HTML to Markdown ---------------------------------------------------------------------


@dataclass(frozen=True)
class HtmlDocument:
    title: str
    body: str  # Markdown
    url: str = ""  # <link rel="canonical">, when it is an http(s) URL
    tags: list[str] = field(default_factory=list)  # <meta name="keywords">
    language: str = ""  # <html lang>, when it is a language code


def html_to_markdown(html: str) -> HtmlDocument:
    """Convert an HTML page to Markdown (see the module's doc for what is kept)."""
    parser = _HtmlToMarkdown()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError) as exc:  # html.parser on some malformed declarations
        raise KnowledgeLoadError(f"cannot parse the HTML: {exc}") from None
    return parser.result()


# Elements dropped with everything inside them.
_DROP = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "iframe",
        "object",
        "embed",
        "svg",
        "math",
        "canvas",
        "audio",
        "video",
        "select",
        "textarea",
        "nav",
        "footer",
    }
)
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
_HEAD_ONLY = frozenset({"title", "meta", "link", "base", "style", "script", "noscript"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "body",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "header",
        "hgroup",
        "hr",
        "html",
        "legend",
        "main",
        "p",
        "section",
        "summary",
    }
)
_TABLE_PARTS = frozenset({"thead", "tbody", "tfoot", "caption", "colgroup"})
_SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_UNSAFE = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E"})
_CODE_LANGUAGE = re.compile(r"(?:^|\s)(?:language|lang)-([\w+#.-]{1,30})")
_LINE_NEEDS_ESCAPE = re.compile(r"^(?:#{1,6}(?:\s|$)|```|~~~|[-=]+$)")
_WHITESPACE = re.compile(r"\s+")
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))


@dataclass
class _Item:
    marker: str  # "- " or "3. " with the indentation of its list
    indent: str  # where the item's further lines start
    used: bool = False


@dataclass
class _List:
    ordered: bool
    count: int = 0


class _HtmlToMarkdown(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []  # (kind, Markdown)
        self.inline: list[str] = []  # text of the block being read
        self.dropping: list[str] = []  # open elements dropped with their content
        self.in_head = False
        self.title_parts: list[str] | None = None
        self.title = ""
        self.first_h1 = ""
        self.canonical = ""
        self.keywords = ""
        self.lang = ""
        self.heading = 0
        self.pre: list[str] | None = None
        self.pre_language = ""
        self.lists: list[_List] = []
        self.items: list[_Item] = []
        self.quote = 0
        self.links: list[tuple[list[str], int, str]] = []  # (buffer, start, safe href or "")
        self.codes: list[tuple[list[str], int]] = []
        self.table_depth = 0
        self.rows: list[list[str]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.table_text: list[str] = []  # captions and stray text of the table

    # -- events --

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.title_parts is not None:  # a title holds text only; a tag ends an open one
            self._end_title()
        if self.dropping:
            if tag in _DROP and tag not in _VOID:
                self.dropping.append(tag)
            return
        if tag in _DROP:
            if tag not in _VOID:
                self.dropping.append(tag)
            return
        attributes = {name: value or "" for name, value in reversed(attrs)}  # first one wins
        if tag == "html":
            self.lang = self.lang or attributes.get("lang", "").strip()
        if tag == "head":
            self.in_head = True
            return
        if tag == "title":
            if not self.title:
                self.title_parts = []
            return
        if tag == "meta":
            if attributes.get("name", "").lower() == "keywords" and not self.keywords:
                self.keywords = attributes.get("content", "")
            return
        if tag == "link":
            rels = attributes.get("rel", "").lower().split()
            if "canonical" in rels and not self.canonical:
                self.canonical = attributes.get("href", "").strip()
            return
        if self.in_head:
            if tag in _HEAD_ONLY:
                return
            self.in_head = False  # content without </head> or <body>: the body has begun
        if self.pre is not None:
            if tag == "br":
                self.pre.append("\n")
            elif tag == "code" and not self.pre_language:
                self.pre_language = _code_language(attributes)
            return
        if tag == "table":
            if self.table_depth == 0:
                self._flush()
                self.rows, self.row, self.cell, self.table_text = [], None, None, []
            else:
                self._sink().append(" ")
            self.table_depth += 1
            return
        if tag == "a":
            sink = self._sink()
            self.links.append((sink, len(sink), _safe_href(attributes.get("href", ""))))
            return
        if tag == "code":
            sink = self._sink()
            self.codes.append((sink, len(sink)))
            return
        if self.table_depth:
            if self.table_depth == 1 and tag == "tr":
                self._end_row()
                self.row = []
            elif self.table_depth == 1 and tag in ("td", "th"):
                self._end_cell()
                if self.row is None:
                    self.row = []
                self.cell = []
            elif tag not in _TABLE_PARTS:
                self._sink().append(" ")
            return
        if tag in _HEADINGS:
            self._flush()
            self.heading = _HEADINGS[tag]
        elif tag == "br":
            self.inline.append("\n")
        elif tag == "pre":
            self._flush()
            self.pre = []
            self.pre_language = _code_language(attributes)
        elif tag in ("ul", "ol"):
            self._flush()
            start = attributes.get("start", "1").strip()
            self.lists.append(_List(tag == "ol", int(start) - 1 if start.isdigit() else 0))
        elif tag == "li":
            self._start_item()
        elif tag == "blockquote":
            self._flush()
            self.quote += 1
        elif tag in _BLOCKS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.dropping:
            if tag in self.dropping:
                while self.dropping.pop() != tag:
                    pass
            return
        if tag == "title":
            if self.title_parts is not None:
                self._end_title()
            return
        if tag == "head":
            self.in_head = False
            return
        if self.in_head:
            return
        if self.pre is not None:
            if tag == "pre":
                self._end_pre()
            return
        if tag == "table":
            if self.table_depth == 1:
                self._end_table()
            elif self.table_depth > 1:
                self._sink().append(" ")
            self.table_depth = max(0, self.table_depth - 1)
            return
        if tag == "a":
            if self.links:
                self._end_link()
            return
        if tag == "code":
            if self.codes:
                self._end_code()
            return
        if self.table_depth:
            if self.table_depth == 1 and tag in ("td", "th"):
                self._end_cell()
            elif self.table_depth == 1 and tag == "tr":
                self._end_row()
            elif tag not in _TABLE_PARTS:
                self._sink().append(" ")
            return
        if tag in _HEADINGS:
            self._flush()
            self.heading = 0
        elif tag == "li":
            self._flush()
            if self.items and len(self.items) >= len(self.lists):
                self.items.pop()
        elif tag in ("ul", "ol"):
            self._flush()
            if self.lists:
                self.lists.pop()
            del self.items[len(self.lists) :]
        elif tag == "blockquote":
            self._flush()
            self.quote = max(0, self.quote - 1)
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        if self.title_parts is not None:
            self.title_parts.append(data)
            return
        if self.in_head:
            return
        if self.pre is not None:
            self.pre.append(data)
            return
        self._sink().append(_WHITESPACE.sub(" ", data))

    # -- helpers --

    def _sink(self) -> list[str]:
        if self.cell is not None:
            return self.cell
        if self.table_depth:
            return self.table_text
        return self.inline

    def _end_title(self) -> None:
        assert self.title_parts is not None
        self.title = " ".join("".join(self.title_parts).split())
        self.title_parts = None

    def _start_item(self) -> None:
        self._flush()
        if not self.lists:  # a stray <li>
            self.lists.append(_List(False))
        if self.items and len(self.items) >= len(self.lists):  # the previous <li> never closed
            self.items.pop()
        parent_indent = self.items[-1].indent if self.items else ""
        current = self.lists[-1]
        current.count += 1
        bullet = f"{current.count}. " if current.ordered else "- "
        self.items.append(_Item(parent_indent + bullet, parent_indent + " " * len(bullet)))

    def _end_link(self) -> None:
        sink, start, href = self.links.pop()
        if sink is not self._sink() or not href:
            return
        raw = "".join(sink[start:])
        text = " ".join(raw.split())
        if not text:
            return
        label = text.replace("[", "\\[").replace("]", "\\]")
        lead = " " if raw[:1].isspace() else ""
        trail = " " if raw[-1:].isspace() else ""
        sink[start:] = [f"{lead}[{label}]({href}){trail}"]

    def _end_code(self) -> None:
        sink, start = self.codes.pop()
        if sink is not self._sink():
            return
        raw = "".join(sink[start:])
        text = " ".join(raw.split())
        if not text:
            return
        ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
        pad = " " if text.startswith("`") or text.endswith("`") else ""
        lead = " " if raw[:1].isspace() else ""
        trail = " " if raw[-1:].isspace() else ""
        sink[start:] = [f"{lead}{ticks}{pad}{text}{pad}{ticks}{trail}"]

    def _flush(self) -> None:
        raw = "".join(self.inline)
        self.inline = []
        lines = [" ".join(line.split()) for line in raw.split("\n")]
        lines = [line for line in lines if line]
        if not lines:
            return
        if self.heading and not self.items:
            text = " ".join(lines)
            if self.heading == 1 and not self.first_h1:
                self.first_h1 = text
            self._add("heading", ["#" * self.heading + " " + text])
            return
        lines = [_escape_line(line) for line in lines]
        if self.items:
            item = self.items[-1]
            first = item.indent if item.used else item.marker
            item.used = True
            self._add("list", [first + lines[0]] + [item.indent + line for line in lines[1:]])
        else:
            self._add("text", lines)

    def _end_pre(self) -> None:
        assert self.pre is not None
        text = "".join(self.pre)
        self.pre = None
        if text.startswith("\n"):  # HTML ignores a newline right after <pre>
            text = text[1:]
        lines = [line.rstrip() for line in text.rstrip().split("\n")]
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            return
        longest = max((len(run) for run in re.findall("`{3,}", text)), default=2)
        fence = "`" * (longest + 1)
        indent = self.items[-1].indent if self.items else ""
        block = [fence + self.pre_language, *lines, fence]
        self._add("code", [indent + line if line else line for line in block])

    def _end_cell(self) -> None:
        if self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()).replace("|", "\\|"))
        self.cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self.row is not None and any(self.row):
            self.rows.append(self.row)
        self.row = None

    def _end_table(self) -> None:
        self._end_row()
        caption = " ".join("".join(self.table_text).split())
        rows, self.rows, self.table_text = self.rows, [], []
        if caption:
            self._add("text", [_escape_line(caption)])
        if not rows:
            return
        width = max(len(row) for row in rows)
        if width == 1 or len(rows) == 1:
            lines = [" | ".join(cell for cell in row if cell) for row in rows]
            self._add("text", [_escape_line(line) for line in lines])
            return
        rows = [row + [""] * (width - len(row)) for row in rows]
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + " --- |" * width)
        self._add("table", lines)

    def _add(self, kind: str, lines: list[str]) -> None:
        if self.quote:
            prefix = "> " * self.quote
            lines = [(prefix + line).rstrip() for line in lines]
        self.blocks.append((kind, "\n".join(lines)))

    def result(self) -> HtmlDocument:
        if self.title_parts is not None:
            self._end_title()
        if self.pre is not None:
            self._end_pre()
        if self.table_depth:
            self._end_table()
        self._flush()
        title = self.title or self.first_h1
        blocks = self.blocks
        if blocks and title and blocks[0] == ("heading", f"# {title}"):
            blocks = blocks[1:]  # the title, not a part of the body
        body = ""
        for i, (kind, text) in enumerate(blocks):
            if i:
                body += "\n" if kind == "list" and blocks[i - 1][0] == "list" else "\n\n"
            body += text
        url = _http_url(self.canonical)
        language = self.lang if is_language_code(self.lang) else ""
        return HtmlDocument(title, body, url, clean_tags(self.keywords.split(",")), language)


def _safe_href(href: str) -> str:
    """The link target to keep: http(s) and mailto URLs only ("" for anything else)."""
    # Browsers ignore leading/trailing control characters and spaces and any tab or newline.
    href = re.sub(r"[\t\n\r]", "", href).strip(_C0_AND_SPACE)
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return ""
    if scheme not in _SAFE_LINK_SCHEMES or len(href) > 2000:
        return ""
    return href.translate(_URL_UNSAFE)


def _http_url(url: str) -> str:
    if not url or len(url) > URL_MAX_CHARS:
        return ""
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        return ""
    return url


def _code_language(attributes: dict[str, str]) -> str:
    match = _CODE_LANGUAGE.search(attributes.get("class", ""))
    return match.group(1) if match else ""


def _escape_line(line: str) -> str:
    """Text that would read as Markdown structure (a heading, a code fence, a setext underline)
    stays text."""
    return "\\" + line if _LINE_NEEDS_ESCAPE.match(line) else line


# --- Finding files ------------------------------------------------------------------------


@dataclass
class Skipped:
    path: Path
    reason: SkipReason
    detail: str


@dataclass
class FileScan:
    files: list[Path] = field(default_factory=list)  # supported files, in order
    unsupported: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # folders that could not be listed


def find_files(paths: Sequence[Path | str]) -> FileScan:
    """The files to ingest under `paths` (files or folders, walked recursively).

    Raises KnowledgeLoadError naming every path that does not exist, before anything is read.
    """
    given = [Path(path) for path in paths]
    missing = [str(path) for path in given if not path.exists()]
    if missing:
        raise KnowledgeLoadError(f"no such file or folder: {', '.join(missing)}")
    scan = FileScan()
    seen: set[Path] = set()

    def consider(path: Path) -> None:
        try:
            key = path.resolve()
        except (OSError, RuntimeError):
            key = path.absolute()
        if key in seen:
            return
        seen.add(key)
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            scan.files.append(path)
        else:
            scan.unsupported.append(path)

    def unlistable(error: OSError) -> None:
        where = Path(str(error.filename or "?"))
        detail = f"cannot list the folder: {error.strerror or error}"
        scan.skipped.append(Skipped(where, SkipReason.UNREADABLE, detail))

    for path in given:
        if not path.is_dir():
            consider(path)
            continue
        for folder, dirs, names in os.walk(path, onerror=unlistable):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            for name in sorted(names):
                if not name.startswith("."):
                    consider(Path(folder) / name)
    return scan


# --- Storing ------------------------------------------------------------------------------


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Stored:
    article_id: int | None  # None in a dry run for an article that would be created
    outcome: Outcome
    slug: str
    notes: tuple[str, ...] = ()  # what an operator should know (a slug changed, a takeover)


def store_document(
    document: Document,
    *,
    published: bool = True,
    language: str | None = None,
    dry_run: bool = False,
    reserved_slugs: set[str] | None = None,
) -> Stored:
    """Create or update the article of one file (see the module's doc for the rules).

    `published`: whether a new article without `published:` is published. `language`: the
    language of a file that does not say (else an existing article keeps its own). With
    `dry_run` nothing is written; `reserved_slugs` (slugs handed out earlier in the same run)
    keeps the slugs it reports right for articles a dry run did not create.
    """
    reserved = reserved_slugs if reserved_slugs is not None else set()
    source = str(document.path)
    notes: list[str] = []
    with transaction.atomic():
        article = Article.objects.select_for_update().filter(source=source).first()
        if article is None:
            namesake = Article.objects.select_for_update().filter(slug=document.slug).first()
            if namesake is not None and not namesake.source and document.slug not in reserved:
                article = namesake
                notes.append(
                    f"took over the existing article '{namesake.slug}' (it came from no file: "
                    "written in the admin or by load_demo_kb)"
                )
        slug = _free_slug(document.slug, article, reserved)
        if slug != document.slug and (article is None or article.slug != slug):
            notes.append(f"the slug '{document.slug}' is taken by another article: using '{slug}'")
        reserved.add(slug)
        if document.published is not None:
            publish = document.published
        else:
            publish = article.published if article is not None else published
        current_language = article.language if article is not None else "en"
        values: dict[str, object] = {
            "slug": slug,
            "title": document.title,
            "body": document.body,
            "url": document.url,
            "tags": list(document.tags),
            "language": document.language or language or current_language,
            "published": publish,
            "source": source,
        }
        if article is None:
            if dry_run:
                return Stored(None, Outcome.CREATED, slug, tuple(notes))
            article = Article.objects.create(**values)
            return Stored(article.id, Outcome.CREATED, slug, tuple(notes))
        if all(getattr(article, name) == value for name, value in values.items()):
            return Stored(article.id, Outcome.UNCHANGED, slug, tuple(notes))
        if not dry_run:
            for name, value in values.items():
                setattr(article, name, value)
            article.save()
        return Stored(article.id, Outcome.UPDATED, slug, tuple(notes))


def _with_suffix(slug: str, number: int) -> str:
    suffix = f"-{number}"
    return slug[: SLUG_MAX_CHARS - len(suffix)] + suffix


def _free_slug(wanted: str, article: Article | None, reserved: set[str]) -> str:
    """`wanted`, or the first free `wanted-N` when another article has it. An article keeps
    the numbered slug it was given."""
    if article is not None:
        if article.slug == wanted:
            return wanted
        numbered = re.fullmatch(r".*-([1-9]\d{0,6})", article.slug)
        if numbered and article.slug == _with_suffix(wanted, int(numbered.group(1))):
            return article.slug
    others = Article.objects.all() if article is None else Article.objects.exclude(pk=article.pk)
    if wanted not in reserved and not others.filter(slug=wanted).exists():
        return wanted
    prefix = wanted[: SLUG_MAX_CHARS - 8]
    taken = set(others.filter(slug__startswith=prefix).values_list("slug", flat=True)) | reserved
    number = 2
    while _with_suffix(wanted, number) in taken:
        number += 1
    return _with_suffix(wanted, number)


# --- The whole run ------------------------------------------------------------------------


@dataclass
class IngestReport:
    files: int = 0  # supported files found
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    article_ids: list[int] = field(default_factory=list)  # every article a file went into
    notes: list[tuple[Path, str]] = field(default_factory=list)


FileCallback = Callable[[int, int, Path, Stored | Skipped], None]  # (done, total, path, result)


def ingest_paths(
    paths: Iterable[Path | str],
    *,
    published: bool = True,
    language: str | None = None,
    dry_run: bool = False,
    on_file: FileCallback | None = None,
) -> IngestReport:
    """Ingest every supported file under `paths`; a file that cannot be ingested is skipped
    (and reported) and the others still go in. Each file is stored in its own transaction.

    Raises KnowledgeLoadError, before anything is written, when a path does not exist.
    Does not index: call knowledge.indexing.sync_passages(report.article_ids) afterwards
    (retrieval would otherwise do it at the next question).
    """
    scan = find_files(list(paths))
    report = IngestReport(files=len(scan.files), unsupported=scan.unsupported)
    report.skipped.extend(scan.skipped)
    reserved: set[str] = set()
    total = len(scan.files)
    for done, path in enumerate(scan.files, start=1):
        result: Stored | Skipped
        try:
            document = read_document(path)
            try:
                result = store_document(
                    document,
                    published=published,
                    language=language,
                    dry_run=dry_run,
                    reserved_slugs=reserved,
                )
            except IntegrityError:  # another process stored the same slug or file meanwhile
                result = store_document(
                    document,
                    published=published,
                    language=language,
                    dry_run=dry_run,
                    reserved_slugs=reserved,
                )
        except FileSkipped as skipped:
            result = Skipped(path, skipped.reason, skipped.detail)
        if isinstance(result, Skipped):
            report.skipped.append(result)
        else:
            if result.outcome is Outcome.CREATED:
                report.created += 1
            elif result.outcome is Outcome.UPDATED:
                report.updated += 1
            else:
                report.unchanged += 1
            if result.article_id is not None:
                report.article_ids.append(result.article_id)
            report.notes.extend((path, note) for note in result.notes)
        if on_file is not None:
            on_file(done, total, path, result)
    return report
