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
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer
from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Left

from conversations.context import visitor_label
from conversations.events import group_message, publish, publish_on_commit
from conversations.models import Conversation, Turn, staff_name

from . import presence, viewers
from .models import ConversationLabel, Note, ReadMarker

INBOX_GROUP = "inbox"
PREVIEW_CHARS = 140
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def notes_group(conversation_id: uuid.UUID | str) -> str:
    return f"inbox.notes.{conversation_id}"


def user_group(user_id: int) -> str:
    return f"inbox.user.{user_id}"


# --- Inbox rows -------------------------------------------------------------------------------


def annotate_rows(queryset: QuerySet[Conversation], agent: Any = None) -> QuerySet[Conversation]:
    """Conversations annotated with everything a row shows, in one query (correlated
    subqueries on the turns' (conversation, -id) index). Unread: customer messages after
    `agent`'s own read marker; without an agent (rows sent to every agent), after the team's
    shared Conversation.agent_read_at."""
    turns = Turn.objects.filter(conversation=OuterRef("pk"))
    last = turns.exclude(author=Turn.Author.SYSTEM).exclude(text="").order_by("-id")
    customer_turns = turns.filter(author=Turn.Author.CUSTOMER)
    if agent is None:
        read_at: Any = OuterRef("agent_read_at")
    else:
        read_at = Subquery(
            ReadMarker.objects.filter(conversation=OuterRef(OuterRef("pk")), user=agent).values(
                "read_at"
            )[:1]
        )
    unread = (
        customer_turns.filter(created_at__gt=Coalesce(read_at, Value(EPOCH)))
        .order_by()
        .values("conversation")
        .annotate(n=Count("id"))
        .values("n")
    )
    return queryset.select_related("customer", "assignee").annotate(
        preview=Left(Subquery(last.values("text")[:1]), PREVIEW_CHARS),
        preview_author=Subquery(last.values("author")[:1]),
        # Kept by database triggers (inbox.models.Waiting): no subquery per row.
        waiting_since=F("waiting__since"),
        unread=Coalesce(Subquery(unread), 0),
    )


def rows_queryset() -> QuerySet[Conversation]:
    return annotate_rows(Conversation.objects.all())


def attach_labels(conversations: list[Conversation]) -> None:
    """Each conversation's labels as `row_labels`, in one query for all of them."""
    by_conversation: dict[Any, list[dict[str, object]]] = {c.pk: [] for c in conversations}
    if not conversations:
        return
    links = ConversationLabel.objects.filter(conversation__in=list(by_conversation))
    for link in links.select_related("label").order_by("label__name"):
        by_conversation[link.conversation_id].append(link.label.as_event())
    for conversation in conversations:
        conversation.row_labels = by_conversation[conversation.pk]  # type: ignore[attr-defined]


def customer_label(conversation: Conversation) -> str:
    customer = conversation.customer
    named = customer.display_name or customer.email or conversation.contact_email
    # Nameless: where the chat started says more than an id (conversations/context.py).
    return named or visitor_label(conversation) or str(customer)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def row(conversation: Conversation) -> dict[str, Any]:
    """A conversation annotated by rows_queryset() as the inbox shows it."""
    since: datetime | None = getattr(conversation, "waiting_since", None)
    # Only where a person is expected: an open conversation is the bot's to answer.
    waiting = since if conversation.status == Conversation.Status.PENDING else None
    assignee = conversation.assignee
    return {
        "id": str(conversation.pk),
        "status": conversation.status,
        "customer": customer_label(conversation),
        "preview": getattr(conversation, "preview", None) or "",
        "preview_author": getattr(conversation, "preview_author", None),
        "last_message_at": _iso(conversation.last_message_at),
        "waiting_since": _iso(waiting),
        "last_customer_message_at": _iso(conversation.last_customer_message_at),
        "unread": int(getattr(conversation, "unread", 0) or 0),
        "assignee": {"id": assignee.pk, "name": staff_name(assignee)} if assignee else None,
        "escalation_reason": conversation.escalation_reason or None,
        "escalated_at": _iso(conversation.escalated_at),
        "snoozed_until": _iso(conversation.snoozed_until),
        "resolved_at": _iso(conversation.resolved_at),
        "rating": conversation.rating,
        "created": _iso(conversation.created_at),
        "labels": getattr(conversation, "row_labels", []),
    }


def row_for(conversation_id: uuid.UUID | str, agent: Any = None) -> dict[str, Any] | None:
    """The row of one conversation; unread counted for `agent` (None: the team's)."""
    conversation = annotate_rows(Conversation.objects.filter(pk=conversation_id), agent).first()
    if conversation is None:
        return None
    attach_labels([conversation])
    return row(conversation)


def notify_inbox_on_commit(conversation_id: uuid.UUID | str) -> None:
    """After the current transaction commits (at once outside one), send the conversation's
    inbox row to every connected agent: `{"type":"inbox.row","row":Row}`. One query.

    Call it from anything that changes what a row shows: a customer message, an escalation,
    a rating, any agent action. Nothing (no query) while no agent has the inbox open.
    """

    def row_frame() -> dict[str, Any] | None:
        if not presence.anyone_present():
            return None  # nobody to send it to; an agent who opens the inbox reads the list
        data = row_for(conversation_id)
        return None if data is None else {"type": "inbox.row", "row": data}

    publish_on_commit(INBOX_GROUP, row_frame)


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
    publish_on_commit(group, lambda: frame)


def send_to_agent(user_id: int, frame: dict[str, Any]) -> None:
    """A frame for one agent's sockets (assist results), sent now."""
    publish(user_group(user_id), frame)


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
