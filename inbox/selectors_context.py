"""The customer context panel on the agent's conversation page (docs/inbox.md#context): who
the customer is (name, email, identified user id, the host site's attributes), where and in
what the chat started, and their other conversations with how each ended. Two queries, however
many conversations the customer has."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Exists, OuterRef, Subquery
from django.db.models.functions import Left
from django.urls import reverse

from conversations.context import url_host
from conversations.models import Conversation, Turn

from .services import get_conversation

OTHER_CONVERSATIONS_SHOWN = 10
TOPIC_CHARS = 100


def outcome(conversation: Conversation) -> str:
    """How a conversation went, as the panel says it: a person was asked for
    (`handed_over`), else `resolved`, else whether the bot answered (`bot_answered`) or
    nobody has yet (`unanswered`)."""
    if conversation.escalated_at is not None:
        return "handed_over"
    if conversation.status == Conversation.Status.RESOLVED:
        return "resolved"
    return "bot_answered" if getattr(conversation, "bot_answered", False) else "unanswered"


def conversation_context(conversation_id: uuid.UUID | str) -> dict[str, Any]:
    """The panel's data for one conversation; raises NotFound."""
    conversation = get_conversation(conversation_id, "customer")
    customer = conversation.customer
    return {
        "conversation_id": str(conversation.pk),
        "customer": {
            "id": str(customer.pk),
            "label": str(customer),
            "name": customer.display_name,
            "email": customer.email,
            # Asked for outside business hours, on this conversation only.
            "contact_email": conversation.contact_email,
            "external_id": customer.external_id,
            "attributes": customer.attributes or {},
            "since": customer.created_at.isoformat(),
        },
        "started": {
            "page_url": conversation.started_page_url,
            "page_host": url_host(conversation.started_page_url),
            "referrer": conversation.started_referrer,
            "browser": conversation.browser,
            "user_agent": conversation.user_agent,
            "language": conversation.browser_language,
            "time_zone": conversation.time_zone,
            "at": conversation.created_at.isoformat(),
        },
        **_other_conversations(conversation),
    }


def _other_conversations(conversation: Conversation) -> dict[str, Any]:
    """The customer's other conversations in which they wrote, newest first (one query: one
    more than shown tells whether there are more)."""
    turns = Turn.objects.filter(conversation=OuterRef("pk"))
    customer_turns = turns.filter(author=Turn.Author.CUSTOMER).exclude(text="")
    others = list(
        Conversation.objects.filter(customer_id=conversation.customer_id)
        .exclude(pk=conversation.pk)
        .filter(Exists(turns.filter(author=Turn.Author.CUSTOMER)))
        .annotate(
            topic=Left(Subquery(customer_turns.order_by("id").values("text")[:1]), TOPIC_CHARS),
            bot_answered=Exists(
                turns.filter(author=Turn.Author.BOT, status=Turn.Status.DONE, abstained=False)
            ),
        )
        .order_by("-created_at")[: OTHER_CONVERSATIONS_SHOWN + 1]
    )
    return {
        "other_conversations": [
            {
                "id": str(other.pk),
                "url": reverse("inbox:conversation", args=[other.pk]),
                "topic": getattr(other, "topic", None) or "",
                "status": other.status,
                "outcome": outcome(other),
                "rating": other.rating,
                "created": other.created_at.isoformat(),
                "earlier": other.created_at < conversation.created_at,
            }
            for other in others[:OTHER_CONVERSATIONS_SHOWN]
        ],
        "more_conversations": len(others) > OTHER_CONVERSATIONS_SHOWN,
    }
