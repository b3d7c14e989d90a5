"""Reading conversations: for the customer's socket (their own conversations only), and the
conversation as the bot's prompt reads it."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce, Left

from bot import wording
from bot.grounding import strip_citations
from bot.prompt import history_scan_limit
from bot.types import ChatMessage
from bot.wording import CUSTOMER_LANGUAGE_LOOKBACK

from .models import Conversation, Customer, Turn
from .state import customer_state

PREVIEW_CHARS = 140


class ConversationNotFound(Exception):
    pass


class NotYourConversation(Exception):
    pass


def conversation_for_customer(customer_id: uuid.UUID, conversation_id: str) -> Conversation:
    try:
        conversation = Conversation.objects.select_related("assignee").get(
            pk=uuid.UUID(str(conversation_id))
        )
    except (ValueError, Conversation.DoesNotExist):
        raise ConversationNotFound(conversation_id) from None
    if conversation.customer_id != customer_id:
        raise NotYourConversation(conversation_id)
    return conversation


def conversation_snapshot(
    conversation: Conversation, limit: int = 200, *, shown_only: bool = False
) -> dict[str, Any]:
    """The frame a socket receives on connect: status, the state the page shows around the
    transcript (state.customer_state, as in `conversation.state` frames) and the latest
    turns, oldest first. The customer's page gets withdrawn replies too (a page that missed
    their reply.done still shows the "queued" placeholder it made from the ack, and hides it
    when the snapshot says withdrawn); `shown_only` leaves them out (the agent's view)."""
    turns: list[Turn] = []
    if not conversation._state.adding:  # a visitor's next conversation has no turns yet
        queryset = (
            Turn.objects.filter(conversation=conversation)
            .select_related("agent")
            .prefetch_related("attachments")
        )
        if shown_only:
            queryset = queryset.shown()
        turns = list(queryset.order_by("-id")[:limit])
        turns.reverse()
    state = customer_state(conversation)
    del state["type"]
    return {
        "type": "conversation",
        "id": str(conversation.pk),
        "status": conversation.status,
        "state": state,
        "turns": [turn.as_event() for turn in turns],
    }


def reply_in_conversation(conversation_id: uuid.UUID, reply_id: int) -> Turn | None:
    return Turn.objects.filter(
        pk=reply_id, conversation_id=conversation_id, author=Turn.Author.BOT
    ).first()


def previous_conversations(customer_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    """The customer's conversations that have messages, most recent activity first, with the
    status, dates and the start of the last message (one query)."""
    last = (
        Turn.objects.filter(conversation=OuterRef("pk"))
        .exclude(author=Turn.Author.SYSTEM)
        .exclude(text="")
        .order_by("-id")
    )
    conversations = (
        Conversation.objects.filter(customer_id=customer_id)
        .annotate(
            last_text=Left(Subquery(last.values("text")[:1]), PREVIEW_CHARS),
            last_author=Subquery(last.values("author")[:1]),
            activity=Coalesce("last_message_at", "created_at"),
        )
        .filter(last_text__isnull=False)
        .order_by("-activity", "-created_at")[:limit]
    )
    return [
        {
            "id": str(conversation.pk),
            "status": conversation.status,
            "created": conversation.created_at.isoformat(),
            "last_message_at": conversation.activity.isoformat(),
            "last_message": {"author": conversation.last_author, "text": conversation.last_text},
            "rated": conversation.rated_at is not None,
        }
        for conversation in conversations
    ]


# --- The conversation as the bot reads it ----------------------------------------------------


def dialogue(conversation_id: uuid.UUID | str, *, before: int | None = None) -> list[ChatMessage]:
    """The conversation as the bot's prompt reads it (bot/prompt.py), oldest first: the
    customer's messages as "user", the bot's and agents' as "assistant" without their [n]
    citation markers (they would point at that answer's passages, not at the ones the new
    prompt numbers the same way). System notices, failed and withdrawn replies are left out.
    Only the latest turns a prompt can use are read (bot.prompt.history_scan_limit: one
    bounded query however long the conversation), those before turn `before` if given."""
    turns = Turn.objects.filter(conversation_id=conversation_id)
    if before is not None:
        turns = turns.filter(id__lt=before)
    history = list(
        turns.dialogue().order_by("-id").values_list("author", "text")[: history_scan_limit()]
    )
    history.reverse()
    return [
        ChatMessage("user", text)
        if author == Turn.Author.CUSTOMER
        else ChatMessage("assistant", strip_citations(text))
        for author, text in history
        if text
    ]


def dialogue_to_answer(conversation_id: uuid.UUID | str) -> list[ChatMessage]:
    """The dialogue up to the customer's last message: what a reply to it reads ([] when the
    customer hasn't written)."""
    messages = dialogue(conversation_id)
    while messages and messages[-1].role != "user":
        messages.pop()
    return messages


def customer_language(conversation_id: uuid.UUID | str) -> str | None:
    """The language the customer writes in (bot.wording.customer_language, from their latest
    messages: one bounded query), None when their messages don't tell: for the notices the
    conversation sends in the bot's name."""
    texts = list(
        Turn.objects.filter(conversation_id=conversation_id, author=Turn.Author.CUSTOMER)
        .order_by("-id")
        .values_list("text", flat=True)[:CUSTOMER_LANGUAGE_LOOKBACK]
    )
    texts.reverse()
    return wording.customer_language(texts)


def customer_name(conversation_id: uuid.UUID | str) -> str:
    """The display name of the conversation's customer ("" when they gave none)."""
    return (
        Customer.objects.filter(conversations__pk=conversation_id)
        .values_list("display_name", flat=True)
        .first()
        or ""
    )
