"""Transcripts out of the database: CSV (one row per message, for spreadsheets) and JSON Lines
(one conversation per line, with its messages and internal notes, for tools).

Both stream and read the conversations in chunks with their turns and notes prefetched, so an
export costs a few queries per chunk however many messages there are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import Prefetch, QuerySet

from conversations.models import Conversation, Turn

from .models import Note

CHUNK = 200

CSV_HEADER = [
    "conversation_id",
    "customer",
    "status",
    "assignee",
    "escalation_reason",
    "rating",
    "conversation_created_at",
    "message_id",
    "message_created_at",
    "author",
    "agent",
    "text",
    "sources",
]

# A cell starting with one of these is a formula to Excel and LibreOffice (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _prefetched(conversations: QuerySet[Conversation]) -> Iterator[Conversation]:
    queryset = (
        conversations.select_related("customer", "assignee")
        .prefetch_related(
            Prefetch(
                "turns",
                queryset=Turn.objects.shown()
                .select_related("agent")
                .prefetch_related("attachments")
                .order_by("id"),
            ),
            Prefetch("notes", queryset=Note.objects.select_related("author").order_by("id")),
        )
        .order_by("created_at", "id")
    )
    yield from queryset.iterator(chunk_size=CHUNK)


def _user(user: Any) -> str:
    return user.get_username() if user is not None else ""


def safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def csv_lines(conversations: QuerySet[Conversation]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for conversation in _prefetched(conversations):
        head = [
            conversation.pk,
            str(conversation.customer),
            conversation.status,
            _user(conversation.assignee),
            conversation.escalation_reason,
            conversation.rating if conversation.rating is not None else "",
            conversation.created_at.isoformat(),
        ]
        for turn in conversation.turns.all():
            sources = "; ".join(
                f"{s.get('title', '')} <{s.get('url', '')}>" for s in turn.sources or []
            )
            row = [
                *head,
                turn.pk,
                turn.created_at.isoformat(),
                turn.author,
                _user(turn.agent),
                turn.text,
                sources,
            ]
            yield writer.writerow([safe_cell(cell) for cell in row])


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "customer": {
            "id": str(conversation.customer_id),
            "name": conversation.customer.display_name,
            "email": conversation.customer.email,
        },
        "status": conversation.status,
        "assignee": _user(conversation.assignee) or None,
        "created_at": conversation.created_at.isoformat(),
        "escalated_at": _iso(conversation.escalated_at),
        "escalation_reason": conversation.escalation_reason or None,
        "contact_email": conversation.contact_email or None,
        "resolved_at": _iso(conversation.resolved_at),
        "rating": conversation.rating,
        "rating_comment": conversation.rating_comment or None,
        "messages": [
            {
                "id": turn.pk,
                "created_at": turn.created_at.isoformat(),
                "author": turn.author,
                "agent": _user(turn.agent) or None,
                "text": turn.text,
                "status": turn.status or None,
                "sources": turn.sources,
                "abstained": turn.abstained,
                "attachments": [
                    {k: a[k] for k in ("name", "content_type", "size", "url")}
                    for a in (attachment.as_event() for attachment in turn.attachments.all())
                ],
            }
            for turn in conversation.turns.all()
        ],
        "notes": [
            {
                "created_at": note.created_at.isoformat(),
                "author": _user(note.author) or None,
                "text": note.text,
            }
            for note in conversation.notes.all()
        ],
    }


def jsonl_lines(conversations: QuerySet[Conversation]) -> Iterable[str]:
    for conversation in _prefetched(conversations):
        yield json.dumps(conversation_record(conversation), ensure_ascii=False) + "\n"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
