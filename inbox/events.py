"""What goes to agents' sockets: the inbox rows, team-only notes, assist results.

Groups (Redis pub/sub channel layer, the same one the customer's sockets use):
- "inbox": every connected agent; one `inbox.row` frame per changed conversation.
- "inbox.notes.<conversation id>": agents watching that conversation; internal notes only.
  The customer's sockets never join it, so a note can't reach a customer.
- "inbox.user.<user id>": one agent's sockets (AI assist results for that agent alone).

The notes group also carries collision detection (who else views or types in a conversation,
see inbox/viewers.py): agents only, like the notes.

Every message uses conversations.events' "frame.forward" format (the frame serialised once).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Left

from conversations.context import visitor_label
from conversations.events import group_message
from conversations.models import Conversation, Turn, staff_name

from . import presence, viewers
from .models import Note

INBOX_GROUP = "inbox"
PREVIEW_CHARS = 140


def notes_group(conversation_id: uuid.UUID | str) -> str:
    return f"inbox.notes.{conversation_id}"


def user_group(user_id: int) -> str:
    return f"inbox.user.{user_id}"


# --- Inbox rows -------------------------------------------------------------------------------


def rows_queryset() -> QuerySet[Conversation]:
    """Conversations annotated with everything a row shows, in one query (correlated
    subqueries on the turns' (conversation, -id) index)."""
    turns = Turn.objects.filter(conversation=OuterRef("pk"))
    last = turns.exclude(author=Turn.Author.SYSTEM).exclude(text="").order_by("-id")
    customer_turns = turns.filter(author=Turn.Author.CUSTOMER)
    unread = (
        customer_turns.filter(
            Q(created_at__gt=OuterRef("agent_read_at")) | Q(conversation__agent_read_at=None)
        )
        .order_by()
        .values("conversation")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Conversation.objects.select_related("customer", "assignee").annotate(
        preview=Left(Subquery(last.values("text")[:1]), PREVIEW_CHARS),
        preview_author=Subquery(last.values("author")[:1]),
        last_customer_at=Coalesce(
            F("last_customer_message_at"),
            Subquery(customer_turns.order_by("-id").values("created_at")[:1]),
        ),
        last_agent_at=Subquery(
            turns.filter(author=Turn.Author.AGENT).order_by("-id").values("created_at")[:1]
        ),
        unread=Coalesce(Subquery(unread), 0),
    )


def customer_label(conversation: Conversation) -> str:
    customer = conversation.customer
    named = customer.display_name or customer.email or conversation.contact_email
    # Nameless: where the chat started says more than an id (conversations/context.py).
    return named or visitor_label(conversation) or str(customer)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def row(conversation: Conversation) -> dict[str, Any]:
    """A conversation annotated by rows_queryset() as the inbox shows it."""
    last_customer_at: datetime | None = getattr(conversation, "last_customer_at", None)
    last_agent_at: datetime | None = getattr(conversation, "last_agent_at", None)
    waiting = (
        conversation.status != Conversation.Status.RESOLVED
        and last_customer_at is not None
        and (last_agent_at is None or last_customer_at > last_agent_at)
    )
    assignee = conversation.assignee
    return {
        "id": str(conversation.pk),
        "status": conversation.status,
        "customer": customer_label(conversation),
        "preview": getattr(conversation, "preview", None) or "",
        "preview_author": getattr(conversation, "preview_author", None),
        "last_message_at": _iso(conversation.last_message_at),
        "waiting_since": _iso(last_customer_at) if waiting else None,
        "unread": int(getattr(conversation, "unread", 0) or 0),
        "assignee": {"id": assignee.pk, "name": staff_name(assignee)} if assignee else None,
        "escalation_reason": conversation.escalation_reason or None,
        "escalated_at": _iso(conversation.escalated_at),
        "snoozed_until": _iso(conversation.snoozed_until),
        "resolved_at": _iso(conversation.resolved_at),
        "rating": conversation.rating,
        "created": _iso(conversation.created_at),
    }


def row_for(conversation_id: uuid.UUID | str) -> dict[str, Any] | None:
    conversation = rows_queryset().filter(pk=conversation_id).first()
    return row(conversation) if conversation else None


def _send(group: str, frame: dict[str, Any]) -> None:
    async_to_sync(get_channel_layer().group_send)(group, group_message(frame))


def notify_inbox_on_commit(conversation_id: uuid.UUID | str) -> None:
    """After the current transaction commits (at once outside one), send the conversation's
    inbox row to every connected agent: `{"type":"inbox.row","row":Row}`. One query.

    Call it from anything that changes what a row shows: a customer message, an escalation,
    a rating, any agent action. Nothing (no query) while no agent has the inbox open.
    """

    def publish() -> None:
        if not presence.anyone_present():
            return  # nobody to send it to; an agent who opens the inbox reads the list
        data = row_for(conversation_id)
        if data is not None:
            _send(INBOX_GROUP, {"type": "inbox.row", "row": data})

    transaction.on_commit(publish)


def announce_row(sender: object, conversation_id: uuid.UUID | str, **kwargs: object) -> None:
    """conversations.signals.conversation_updated: the row changed, tell every agent."""
    notify_inbox_on_commit(conversation_id)


# --- Notes and assist -------------------------------------------------------------------------


def note_event(note: Note) -> dict[str, Any]:
    author = note.author
    return {
        "id": note.pk,
        "text": note.text,
        "created": note.created_at.isoformat(),
        "author_name": staff_name(author),
    }


def send_note_on_commit(note: Note) -> None:
    """`{"type":"note","conversation_id":…,"note":Note}` to the agents watching it, only."""
    group = notes_group(note.conversation_id)
    frame = {"type": "note", "conversation_id": str(note.conversation_id), "note": note_event(note)}
    transaction.on_commit(lambda: _send(group, frame))


def send_to_agent(user_id: int, frame: dict[str, Any]) -> None:
    """A frame for one agent's sockets (assist results), sent now."""
    _send(user_group(user_id), frame)


# --- Collision detection (agents only: the notes group) ---------------------------------------


async def _send_now(group: str, frame: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group, group_message(frame))


async def send_viewers(conversation_id: uuid.UUID | str) -> None:
    """`{"type":"viewers","conversation_id":…,"viewers":[{"id","name"}]}` to the agents watching
    it (the page shows the others: "Dana is viewing"). Customers never join this group."""
    frame = {
        "type": "viewers",
        "conversation_id": str(conversation_id),
        "viewers": await viewers.viewers(conversation_id),
    }
    await _send_now(notes_group(conversation_id), frame)


async def send_team_typing(
    conversation_id: uuid.UUID | str, agent: dict[str, Any], where: str, active: bool
) -> None:
    """`{"type":"agent.typing",…,"agent":{"id","name"},"where":"reply"|"note","active"}` to the
    agents watching it: "Dana is typing a reply…". A note's typing never reaches the customer."""
    frame = {
        "type": "agent.typing",
        "conversation_id": str(conversation_id),
        "agent": agent,
        "where": where,
        "active": active,
    }
    await _send_now(notes_group(conversation_id), frame)
