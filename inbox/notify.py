"""What the agent's notifications start from (static/inbox/notify.js): the conversations
waiting for a person, unassigned or the agent's own, with customer messages not yet read.
Live changes then come as inbox.row frames; this is the count a page opens with."""

from __future__ import annotations

from typing import Any

from django.db.models import F, OuterRef, Q, Subquery

from conversations.models import Conversation

from .models import ReadMarker

# The tab title says "(99+)" past this; the list is the newest ones.
MAX_UNREAD = 99


def unread_conversation_ids(user: Any) -> list[str]:
    """Pending conversations (unassigned or the user's) with a customer message this user has
    not read (their own read marker, as the inbox's unread), newest first, at most
    MAX_UNREAD + 1 (so the page knows there are more). One query."""
    read_at = ReadMarker.objects.filter(conversation=OuterRef("pk"), user=user).values("read_at")
    ids = (
        Conversation.objects.filter(status=Conversation.Status.PENDING)
        .filter(Q(assignee=None) | Q(assignee=user))
        .filter(last_customer_message_at__isnull=False)
        .annotate(my_read_at=Subquery(read_at[:1]))
        .filter(Q(my_read_at=None) | Q(last_customer_message_at__gt=F("my_read_at")))
        .order_by("-last_customer_message_at")
        .values_list("pk", flat=True)[: MAX_UNREAD + 1]
    )
    return [str(pk) for pk in ids]
