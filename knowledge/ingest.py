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
- HTML: converted to Markdown by markdownify (MIT) on a BeautifulSoup tree parsed by lxml
  (BSD), maintained libraries rather than a converter of our own; lxml applies a browser's
  rules for end tags left out (<li>, <p>, <td>) and for a head never closed, which the stdlib
  parser does not. Title from <title>, else the first <h1>. Headings, paragraphs, line breaks,
  bold and italics, lists, <pre> (fenced code, with the language of a `language-`/`lang-`
  class), inline <code>, links (only http, https and mailto targets; other links keep their
  text only), tables (a Markdown table), blockquotes. Dropped with their content: script,
  style, noscript, template, iframe, object, embed, svg, math, canvas, audio, video, select,
  textarea, nav, footer, images, comments and the head (except its title and metadata).
  Attributes are never copied, so event handlers cannot survive; text that would read as raw
  HTML, a heading or a code fence is escaped. Metadata: <link rel="canonical"> (http/https)
  gives the url, <meta name="keywords"> the tags, <html lang> the language.

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
(`ingest_kb --language`), else the language the article already has (an operator may have
set it in the admin), else the language its title and text are written in
(knowledge.language.detect_language), else (when that is unsure: a very short article, or a
language it does not name) "en". The admin re-detects an article's language on request.

Edits made in the admin to an article that came from a file are replaced by the file's text
the next time the file is ingested: the file is the source of truth.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, ParserRejectedMarkup, Tag, UnusualUsageWarning
from bs4.element import PreformattedString
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils.text import slugify
from markdownify import ATX, MarkdownConverter

from .language import article_language
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

SOURCE_MAX_CHARS = 1000  # Article.source
TEXT_TITLE_MAX_CHARS = 100


def max_file_bytes() -> int:
    """The largest file ingested (settings.KB_MAX_FILE_BYTES, default 2 MB)."""
    return int(settings.KB_MAX_FILE_BYTES)


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
    try:
        with warnings.catch_warnings():
            # XHTML with an XML declaration, or a page that is only a URL, is still read as HTML.
            warnings.simplefilter("ignore", UnusualUsageWarning)
            soup = BeautifulSoup(html, "lxml")
    except ParserRejectedMarkup as exc:
        raise KnowledgeLoadError(f"cannot parse the HTML: {exc}") from None
    titles = soup.find_all("title")
    title = _first_text(tag for tag in titles if tag.find_parent(["svg", "math"]) is None)
    keywords = _first(
        _attribute(meta, "content")
        for meta in soup.find_all("meta")
        if _attribute(meta, "name").lower() == "keywords"
    )
    canonical = _first(
        _attribute(link, "href").strip()
        for link in soup.find_all("link")
        if "canonical" in _attribute(link, "rel").lower().split()
    )
    lang = _first(_attribute(root, "lang").strip() for root in soup.find_all("html"))
    _drop_unsafe(soup)
    _tidy_tables(soup)
    title = title or _first_text(soup.find_all("h1"))
    try:
        soup.smooth()  # whitespace left on both sides of a dropped element becomes one space
        body = _MarkdownConverter().convert_soup(soup)
    except RecursionError:
        # markdownify recurses once per nesting level and gives up at a few hundred
        # (python-markdownify#276); such a page keeps its text, one line per source line.
        lines = (" ".join(line.split()) for line in soup.get_text(" ").splitlines())
        body = "\n".join(_escape_text(line) for line in lines if line)
    # No trailing spaces, which editors and forms drop anyway: a <br> (markdownify's "  " break)
    # reads as a plain newline, and the spaces around the page's top-level elements go.
    body = _TRAILING_SPACES.sub("", body).strip()
    heading = f"# {title}"
    if title and (body == heading or body.startswith(heading + "\n")):
        body = body[len(heading) :].lstrip("\n")  # the title, not a part of the body
    language = lang if is_language_code(lang) else ""
    return HtmlDocument(
        title, body, _http_url(canonical), clean_tags(keywords.split(",")), language
    )


# Elements dropped with everything inside them. markdownify's `strip` option would keep their
# text (python-markdownify#259), so they are taken out of the parsed page instead.
_DROP = (
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
    "head",  # once its title and metadata are read
    "title",  # one misplaced in the body too
    # An image would load from anywhere when the article is shown; it has no text.
    "img",
)
_SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_UNSAFE = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E"})
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))
_CODE_LANGUAGE = re.compile(r"(?:^|\s)(?:language|lang)-([\w+#.-]{1,30})")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_TRAILING_SPACES = re.compile(r"[ \t]+$", re.MULTILINE)
_TABLE_PARTS = frozenset({"caption", "thead", "tbody", "tfoot", "tr", "th", "td"})
# Text at a line start that would read as a heading or a code fence.
_STRUCTURE_AT_LINE_START = re.compile(r"^( ?)(#{1,6}(?=\s|$)|```|~~~)", re.MULTILINE)
# What CommonMark would read as raw HTML: "<" before a tag name, "/", "!" or "?".
_HTML_START = re.compile(r"<(?=[A-Za-z/!?])")


class _MarkdownConverter(MarkdownConverter):
    """markdownify with ingest's rules: ATX headings and "-" bullets, whitespace collapsed as a
    browser does, links only to safe targets, code fences that the code cannot close, and text
    that cannot turn into Markdown structure or raw HTML."""

    def __init__(self) -> None:
        super().__init__(
            heading_style=ATX,
            bullets="-",
            autolinks=False,  # every link reads [text](url), never <url>
            # "*" and "_" stay as written: the bot quotes and embeds this text, and
            # identifiers such as order_id would otherwise read order\_id.
            escape_asterisks=False,
            escape_underscores=False,
            table_infer_header=True,  # a table's first row is its header, as on the page
            wrap=True,  # source line breaks are spaces, as in a browser ...
            wrap_width=None,  # ... and paragraphs are not re-wrapped
        )

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        # markdownify copies any href, javascript: included; other links keep their text only.
        href = _safe_href(_attribute(el, "href"))
        label = text.strip()
        if "_noformat" in parent_tags or not href or not label:
            return text
        label = label.replace("[", "\\[").replace("]", "\\]")
        lead = " " if text[:1].isspace() else ""
        trail = " " if text[-1:].isspace() else ""
        return f"{lead}[{label}]({href}){trail}"

    def convert_pre(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        # markdownify always fences with ```, which a line of ``` in the code would close.
        code = _LEADING_BLANK_LINES.sub("", text.rstrip())
        if not code:
            return ""
        longest = max((len(run) for run in re.findall("`{3,}", code)), default=2)
        fence = "`" * (longest + 1)
        return f"\n\n{fence}{_code_language(el)}\n{code}\n{fence}\n\n"

    def escape(self, text: str, parent_tags: set[str]) -> str:
        text = _escape_text(text)
        if "td" in parent_tags or "th" in parent_tags:
            text = text.replace("|", "\\|")  # a pipe would split the cell
        return text


def _escape_text(text: str) -> str:
    """Text stays text: no heading or code fence at a line start, no raw HTML."""
    text = _STRUCTURE_AT_LINE_START.sub(r"\1\\\2", text)
    return _HTML_START.sub(r"\\<", text)


def _drop_unsafe(soup: BeautifulSoup) -> None:
    """Take out the _DROP elements, and comments, CDATA, <!...> and <?...?> (markdownify would
    copy the last three as text)."""
    for node in list(soup.descendants):
        if isinstance(node, PreformattedString) or (isinstance(node, Tag) and node.name in _DROP):
            node.extract()  # a node inside one taken out already goes with it anyway


def _tidy_tables(soup: BeautifulSoup) -> None:
    """Tables as markdownify can write them.

    A table of one row or one column lays the page out: its cells read as blocks. A table in a
    cell reads as text, as a Markdown cell cannot hold a table. markdownify takes a table's
    first row to be the <tr> without a tag before it, so a caption or colgroup there would lose
    the header line and a tfoot row would become a second header (microsoft/markitdown#2536):
    captions go before their table, column groups go, and footer rows go last.
    """
    tags = [node for node in soup.descendants if isinstance(node, Tag)]
    for table in [tag for tag in tags if tag.name == "table"]:
        parts = [
            part
            for part in _tags(table.descendants)
            if part.name in _TABLE_PARTS and _nearest(part, {"table"}) is table
        ]
        rows = [_cells(part) for part in parts if part.name == "tr"]
        if _nearest(table, {"td", "th"}) is not None:
            for part in parts:
                if part.name in ("td", "th", "caption"):
                    part.append(" ")
            _rename([table, *parts], "span")
        elif len(rows) <= 1 or all(len(cells) <= 1 for cells in rows):
            _rename([table, *parts], "div")
    for tag in tags:
        owner = _nearest(tag, {"table"})  # None too once taken out with its colgroup
        if owner is None:
            continue
        if tag.name == "caption":
            tag.name = "p"
            owner.insert_before(tag.extract())
        elif tag.name in ("colgroup", "col"):
            tag.extract()
        elif tag.name == "tfoot":
            bodies = [child for child in _tags(owner.children) if child.name == "tbody"]
            last = bodies[-1] if bodies else owner
            for row in [child for child in _tags(tag.children) if child.name == "tr"]:
                last.append(row.extract())
            tag.extract()


def _tags(nodes: Iterable[object]) -> list[Tag]:
    return [node for node in nodes if isinstance(node, Tag)]


def _cells(row: Tag) -> list[Tag]:
    return [cell for cell in _tags(row.children) if cell.name in ("td", "th")]


def _nearest(tag: Tag, names: set[str]) -> Tag | None:
    """The closest ancestor of `tag` named one of `names` (bs4's find_parent, without its
    matching machinery, which is slow on large pages)."""
    parent = tag.parent
    while parent is not None and parent.name not in names:
        parent = parent.parent
    return parent


def _rename(tags: Iterable[Tag], name: str) -> None:
    for tag in tags:
        tag.name = name


def _attribute(tag: object, name: str) -> str:
    """An attribute's value as text ("" when absent; a multi-valued one such as rel joined)."""
    value = tag.get(name) if isinstance(tag, Tag) else None
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(value)


def _first(values: Iterable[str]) -> str:
    return next((value for value in values if value), "")


def _first_text(tags: Iterable[object]) -> str:
    """The whitespace-collapsed text of the first of `tags` that has any."""
    return _first(" ".join(tag.get_text().split()) for tag in tags if isinstance(tag, Tag))


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


def _code_language(pre: Tag) -> str:
    """The language of a <pre>, from its class or its <code>'s ("language-sh", "lang-sh")."""
    for tag in (pre, pre.find("code")):
        match = _CODE_LANGUAGE.search(_attribute(tag, "class"))
        if match:
            return match.group(1)
    return ""


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
    language of a file that does not say (else an existing article keeps its own, and a new
    one's is detected from its text). With
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
        values: dict[str, object] = {
            "slug": slug,
            "title": document.title,
            "body": document.body,
            "url": document.url,
            "tags": list(document.tags),
            "language": _language_of(document, language, article),
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


def _language_of(document: Document, language: str | None, article: Article | None) -> str:
    """The file's language, else `language`, else the article's own, else the text's."""
    if document.language or language:
        return document.language or language or ""
    if article is not None:
        return article.language
    return article_language(document.title, document.body) or "en"


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
    (until then the articles are not searchable; ingest_kb does it with a progress bar).
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
