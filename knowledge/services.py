"""Loading help articles from Markdown files with a small front matter block.

A file looks like this::

    ---
    title: How do I return an item?
    slug: returns
    url: https://help.brightwave.example/returns
    tags: [returns, orders]
    language: en
    ---
    Markdown body...

The front matter is a deliberately small subset of YAML: one `key: value` per line, values
that are plain or quoted strings, `true`/`false`, or lists (inline `[a, "b c"]` or indented
`- item` lines), and `#` comments. That is all help articles need, and it keeps the loader free
of a YAML dependency. Anything else is an error that names the file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_slug
from django.db import transaction

from .indexing import sync_example_questions, sync_passages
from .language import question_key, tidy_question
from .models import Article, ExampleQuestion

#: The label of a question the knowledge base doesn't answer (as in eval_kb's question sets).
NONE_LABEL = "none"

DEMO_DIR = Path(__file__).resolve().parent / "demo"

# Article's field sizes.
TITLE_MAX_CHARS = 300
SLUG_MAX_CHARS = 200
URL_MAX_CHARS = 500
LANGUAGE_MAX_CHARS = 12

FrontMatterValue = str | bool | list[str]

_KEY_LINE = re.compile(r"^([A-Za-z_][\w-]*)\s*:(?:\s+(.*))?$")
_LIST_ITEM = re.compile(r"^\s+-\s*(.*)$")
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


class KnowledgeLoadError(ValueError):
    """A Markdown article could not be read; the message names the file and the problem."""


class EmptyArticleError(KnowledgeLoadError):
    """The article has a title but no text to answer from."""


@dataclass(frozen=True)
class ArticleSource:
    """One article as read from a file, before it is stored."""

    slug: str
    title: str
    body: str
    url: str = ""
    tags: list[str] = field(default_factory=list)
    language: str = "en"
    published: bool = True


class LoadResult(NamedTuple):
    created: int
    updated: int


# --- Front matter -------------------------------------------------------------------------


def parse_front_matter(text: str) -> tuple[dict[str, FrontMatterValue], str]:
    """Split a document into its front matter (a dict) and its body.

    A document without a leading `---` line has no front matter: ({}, text).
    Raises KnowledgeLoadError on an unterminated block or a line it cannot read.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].strip() != "---":
        return {}, text
    try:
        end = next(i for i in range(first + 1, len(lines)) if lines[i].strip() in {"---", "..."})
    except StopIteration:
        raise KnowledgeLoadError("front matter starts with '---' but never ends") from None

    meta: dict[str, FrontMatterValue] = {}
    current_list: list[str] | None = None
    for number in range(first + 1, end):
        line = lines[number]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = _LIST_ITEM.match(line)
        if item and current_list is not None:
            current_list.append(_scalar(item.group(1), number + 1))
            continue
        match = _KEY_LINE.match(line.rstrip())
        if not match:
            raise KnowledgeLoadError(f"line {number + 1}: expected 'key: value', got {line!r}")
        key, raw = match.group(1).lower(), (match.group(2) or "").strip()
        if key in meta:
            raise KnowledgeLoadError(f"line {number + 1}: duplicate key {key!r}")
        if not raw:  # a block list may follow
            current_list = []
            meta[key] = current_list
        else:
            current_list = None
            meta[key] = _value(raw, number + 1)
    body = "\n".join(lines[end + 1 :]).strip("\n")
    return meta, body


def _value(raw: str, line: int) -> FrontMatterValue:
    raw = _strip_comment(raw)
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise KnowledgeLoadError(f"line {line}: unterminated list {raw!r}")
        return [item for item in _split_inline_list(raw[1:-1], line) if item]
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return _scalar(raw, line)


def _scalar(raw: str, line: int) -> str:
    raw = _strip_comment(raw.strip())
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if raw[:1] in {'"', "'"}:
        raise KnowledgeLoadError(f"line {line}: unterminated quote in {raw!r}")
    return raw


def _strip_comment(raw: str) -> str:
    """Drop a ` # comment` outside quotes (YAML needs the space before '#')."""
    quote = ""
    for i, char in enumerate(raw):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or raw[i - 1].isspace()):
            return raw[:i].rstrip()
    return raw


def _split_inline_list(inner: str, line: int) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quote = ""
    for char in inner:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == ",":
            items.append(_scalar("".join(current), line))
            current = []
        else:
            current.append(char)
    if quote:
        raise KnowledgeLoadError(f"line {line}: unterminated quote in list [{inner}]")
    items.append(_scalar("".join(current), line))
    return items


# --- Articles -----------------------------------------------------------------------------


def read_markdown_article(path: Path) -> ArticleSource:
    """Read one Markdown file. The slug defaults to the file name; the title to the first
    `# Heading` of the body (which is then removed from the body)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeLoadError(f"{path}: cannot read: {exc}") from exc
    try:
        meta, body = parse_front_matter(text)
        return article_from_meta(meta, body, default_slug=path.stem)
    except KnowledgeLoadError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def article_from_meta(
    meta: dict[str, FrontMatterValue],
    body: str,
    *,
    default_slug: str,
    default_title: str = "",
    default_language: str = "en",
) -> ArticleSource:
    """An article from front matter and a Markdown body, checked.

    The title is the front matter's, else the body's leading `# Heading` (then removed from the
    body), else `default_title`. Raises KnowledgeLoadError naming the problem, and its
    subclass EmptyArticleError when there is no body.
    """

    def text_field(name: str, default: str = "") -> str:
        value = meta.get(name, default)
        if not isinstance(value, str):
            raise KnowledgeLoadError(f"{name!r} must be text")
        return value.strip()

    title = text_field("title")
    if not title:
        lines = body.split("\n")
        for i, line in enumerate(lines):
            if line.strip():
                heading = _H1.match(line.strip())
                if heading:
                    title = heading.group(1)
                    body = "\n".join(lines[i + 1 :]).strip("\n")
                break
    title = title or default_title.strip()
    if not title:
        raise KnowledgeLoadError("no title (set 'title:' or start the body with '# Title')")
    if not body.strip():
        raise EmptyArticleError("the article has no body")
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"

    slug = text_field("slug", default_slug)
    url = text_field("url")
    try:
        validate_slug(slug)
        if url:
            URLValidator(schemes=["http", "https"])(url)
    except ValidationError as exc:
        raise KnowledgeLoadError("; ".join(exc.messages)) from None
    if len(slug) > SLUG_MAX_CHARS:
        raise KnowledgeLoadError(f"slug longer than {SLUG_MAX_CHARS} characters")
    if len(url) > URL_MAX_CHARS:
        raise KnowledgeLoadError(f"url longer than {URL_MAX_CHARS} characters")
    language = text_field("language", default_language) or default_language
    if not is_language_code(language):
        raise KnowledgeLoadError(
            f"'language' must be a language code such as en or pt-BR, got {language!r}"
        )

    tags = meta.get("tags", [])
    if isinstance(tags, str):  # "tags: a, b" reads as two tags
        tags = tags.split(",")
    if not isinstance(tags, list):
        raise KnowledgeLoadError("'tags' must be a list")
    published = meta.get("published", True)
    if not isinstance(published, bool):
        raise KnowledgeLoadError("'published' must be true or false")

    return ArticleSource(
        slug=slug,
        title=title,
        body=body.strip() + "\n",
        url=url,
        tags=clean_tags(tags),
        language=language,
        published=published,
    )


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags stripped, without empty ones or repeats, in their order."""
    result: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        tag = " ".join(str(tag).split())
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            result.append(tag)
    return result


def is_language_code(language: str) -> bool:
    """A BCP-47-like tag (en, de-CH, pt_BR) that fits Article.language."""
    return len(language) <= LANGUAGE_MAX_CHARS and bool(_LANGUAGE.match(language))


def markdown_files(folder: Path | str) -> list[Path]:
    """The `*.md` files directly in a folder, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KnowledgeLoadError(f"{folder}: not a folder")
    return sorted(path for path in folder.glob("*.md") if path.is_file())


def upsert_articles(sources: Iterable[ArticleSource]) -> LoadResult:
    """Create or update articles by slug, in one transaction, then index those it changed.

    An article whose stored fields already match is not saved again, so its `updated_at`
    (and with it the search index) stays as it is. Articles not in `sources` are left alone.
    """
    created = updated = 0
    changed: list[int] = []
    with transaction.atomic():
        for source in sources:
            values = {
                "title": source.title,
                "body": source.body,
                "url": source.url,
                "tags": list(source.tags),
                "language": source.language,
                "published": source.published,
            }
            article = Article.objects.select_for_update().filter(slug=source.slug).first()
            if article is None:
                article = Article.objects.create(slug=source.slug, **values)
                created += 1
            elif any(getattr(article, name) != value for name, value in values.items()):
                for name, value in values.items():
                    setattr(article, name, value)
                article.save()
                updated += 1
            else:
                continue
            changed.append(article.pk)
    if changed:
        sync_passages(changed)
    return LoadResult(created, updated)


def load_markdown_folder(folder: Path | str) -> LoadResult:
    """Upsert every `*.md` article in a folder by slug: (created, updated).

    All files are read and checked before anything is written, so one bad file loads nothing.
    """
    sources = [read_markdown_article(path) for path in markdown_files(folder)]
    slugs = [source.slug for source in sources]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise KnowledgeLoadError(f"{folder}: duplicate slugs: {', '.join(duplicates)}")
    return upsert_articles(sources)


# --- Example questions ---------------------------------------------------------------------

#: The demo's own example questions: the question sets the shipped ranker was trained on.
#: holdout.jsonl is not among them: it measures what examples and ranker do for new questions.
DEMO_EXAMPLE_SETS = (
    "dev.jsonl",
    "eval.jsonl",
    *(f"dev{n}.jsonl" for n in range(2, 8)),
)

EXAMPLE_MAX_CHARS = 500


@dataclass(frozen=True)
class ExampleImport:
    created: int = 0
    relabelled: int = 0
    unchanged: int = 0
    skipped: tuple[str, ...] = ()  # why each skipped question was skipped
    embedded: int = 0  # questions given a vector after the import


def import_example_questions(
    questions: Iterable[tuple[str, str]],
    *,
    source: str = ExampleQuestion.Source.IMPORTED,
) -> ExampleImport:
    """Upsert example questions given as (question, article slug or "none"), in one transaction.

    A question is one example however it is cased or spaced; importing it again with another
    label relabels it (the newer label wins). A question naming an unknown article, empty or
    too long is skipped and said why; the rest still go in. New questions are embedded once
    the import is stored (knowledge.indexing.sync_example_questions)."""
    article_of = dict(Article.objects.values_list("slug", "id"))
    created = relabelled = unchanged = 0
    skipped: list[str] = []
    labelled = [(tidy_question(text), expected) for text, expected in questions]
    new: dict[str, ExampleQuestion] = {}
    with transaction.atomic():
        # One query for those already there (a re-import, such as load_demo_kb at every start,
        # finds them all), not one a question.
        existing = {
            example.key: example
            for example in ExampleQuestion.objects.filter(
                key__in={question_key(text) for text, _ in labelled if text}
            )
            .only("id", "key", "text", "article")
            .order_by()
        }
        for text, expected in labelled:
            if not text:
                skipped.append("an empty question")
                continue
            if len(text) > EXAMPLE_MAX_CHARS:
                skipped.append(f"{text[:60]}…: longer than {EXAMPLE_MAX_CHARS} characters")
                continue
            article_id = None if expected == NONE_LABEL else article_of.get(expected)
            if expected != NONE_LABEL and article_id is None:
                skipped.append(f"{text[:60]}: no article {expected!r}")
                continue
            key = question_key(text)
            example = existing.get(key)
            if example is None:
                example = ExampleQuestion(text=text, key=key, article_id=article_id, source=source)
                new[key] = existing[key] = example
                created += 1
            elif example.article_id != article_id:
                example.article_id = article_id
                if example.pk is not None:  # stored before; a new one goes in with its label
                    example.save(update_fields=["article", "updated_at"])
                relabelled += 1
            else:
                unchanged += 1
        # One INSERT a few hundred, not one a question: the demo's 1,187 go in at every fresh
        # start (and every browser test).
        ExampleQuestion.objects.bulk_create(new.values(), batch_size=500)
    embedded = sync_example_questions()
    return ExampleImport(created, relabelled, unchanged, tuple(skipped), embedded)
