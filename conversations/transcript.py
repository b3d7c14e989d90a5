"""The admin's transcript as a chat (a selector: it reads, never writes).

Entries are plain data the template renders (templates/admin/conversations/conversation/
change_form.html): the turns here, plus whatever apps built on this one add through
ConversationAdmin.extend(entries=...) (the inbox: its internal notes), merged by time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.urls import NoReverseMatch, reverse

from .models import Conversation, Turn, staff_name


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Entry:
    """One bubble of the transcript."""

    # customer | bot | agent | system | note: the bubble's side and colour.
    kind: str
    author: str
    at: datetime
    text: str
    # Bot and agent text is Markdown (the page renders it through the project's sanitiser).
    markdown: bool = False
    # Why a reader should look twice: "Couldn't answer", "Failed", "Internal note"…
    marks: tuple[str, ...] = ()
    sources: tuple[Link, ...] = ()
    attachments: tuple[Link, ...] = ()
    prompt_version: Link | None = None
    # The bot's cost and speed, in one line ("gpt-4o-mini · 812 + 95 tokens · 640 ms").
    details: str = ""
    # Among entries of the same time, turns before notes, each in its own order.
    order: tuple[int, int] = field(default=(0, 0))


def transcript_turns(conversation: Conversation) -> list[Turn]:
    """The turns the transcript shows, with what each renders, in three queries whatever their
    number (turns with their agent and prompt version; their files)."""
    return list(
        conversation.turns.exclude(status=Turn.Status.WITHDRAWN)
        .select_related("agent", "prompt_version")
        .prefetch_related("attachments")
        .order_by("id")
    )


@dataclass(frozen=True)
class Viewer:
    """What the reader may open: links to admin pages they would get a 403 on are left out
    (the name stays)."""

    articles: bool = False
    versions: bool = False

    @classmethod
    def of(cls, user: Any) -> Viewer:
        return cls(
            articles=user.has_perm("knowledge.view_article"),
            versions=user.has_perm("studio.view_promptversion"),
        )


def turn_entries(conversation: Conversation, viewer: Viewer) -> list[Entry]:
    customer = str(conversation.customer)
    return [_entry(turn, customer, viewer) for turn in transcript_turns(conversation)]


def merged(*groups: Iterable[Entry]) -> list[Entry]:
    """All entries by time; ties keep turns before notes and each group's own order."""
    return sorted((e for group in groups for e in group), key=lambda e: (e.at, e.order))


def _entry(turn: Turn, customer: str, viewer: Viewer) -> Entry:
    marks: list[str] = []
    details = ""
    if turn.author == Turn.Author.BOT:
        if turn.status == Turn.Status.FAILED:
            marks.append(f"Failed ({turn.error_code})" if turn.error_code else "Failed")
        elif turn.status in (Turn.Status.QUEUED, Turn.Status.STREAMING):
            marks.append("Being written")
        if turn.abstained:
            marks.append("Couldn't answer")
        details = _bot_details(turn)
    return Entry(
        kind=turn.author,
        author=_author(turn, customer),
        at=turn.created_at,
        text=turn.text,
        markdown=turn.author in (Turn.Author.BOT, Turn.Author.AGENT),
        marks=tuple(marks),
        sources=tuple(_source_links(turn.sources, viewer)),
        attachments=tuple(Link(a.name, a.as_event()["url"]) for a in turn.attachments.all()),
        prompt_version=_version_link(turn, viewer),
        details=details,
        order=(0, turn.pk),
    )


def _author(turn: Turn, customer: str) -> str:
    if turn.author == Turn.Author.CUSTOMER:
        return customer
    if turn.author == Turn.Author.AGENT:
        return staff_name(turn.agent) or "Agent (deleted)"
    return turn.get_author_display()


def _source_links(sources: Any, viewer: Viewer) -> Iterable[Link]:
    """Each source as its title linked to the article: its public URL, else its admin page."""
    for source in sources if isinstance(sources, list) else []:
        if not isinstance(source, dict):
            continue
        title = str(source.get("title") or "Untitled article")
        number = source.get("n")
        label = f"[{number}] {title}" if isinstance(number, int) else title
        url = str(source.get("url") or "")
        if not url.startswith(("http://", "https://", "/")):
            article_id = source.get("article_id") if viewer.articles else None
            url = _admin_url("admin:knowledge_article_change", article_id)
        yield Link(label, url)


def _version_link(turn: Turn, viewer: Viewer) -> Link | None:
    version = turn.prompt_version
    if version is None:
        return None
    url = _admin_url("admin:studio_promptversion_change", version.pk) if viewer.versions else ""
    return Link(str(getattr(version, "name", "") or f"Version {version.pk}"), url)


def _admin_url(name: str, pk: object) -> str:
    # By URL name, not import: the studio and knowledge admins may not be installed.
    if pk in (None, ""):
        return ""
    try:
        return reverse(name, args=[pk])
    except NoReverseMatch:
        return ""


def _bot_details(turn: Turn) -> str:
    parts = [turn.model] if turn.model else []
    if turn.prompt_tokens is not None or turn.completion_tokens is not None:
        parts.append(f"{turn.prompt_tokens or 0:,} + {turn.completion_tokens or 0:,} tokens")
    if turn.first_token_ms is not None:
        parts.append(f"first token {turn.first_token_ms:,} ms")
    if turn.cost is not None:
        parts.append(f"cost {turn.cost:.4f}")
    return " · ".join(parts)
