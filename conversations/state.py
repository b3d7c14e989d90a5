"""What the customer's page shows around the transcript, and announcing a change of a
conversation to everyone who shows it: the customer's sockets (a `conversation.state`
frame), a reply that is streaming (who answers now) and the team (signals.conversation_updated).

Every change is announced after commit. Call conversation_changed() from anything that changes
a conversation's status, assignee, contact or rating (the agent side does too).
"""

from __future__ import annotations

import uuid
from typing import Any

from . import events, signals
from .availability import team_answers_now
from .models import Conversation, staff_name

Status = Conversation.Status


def customer_state(conversation: Conversation) -> dict[str, Any]:
    """The conversation as the customer's page shows it around the transcript: who answers,
    whether to ask for an email address or a rating. Sent on connect (in the snapshot) and as
    a `conversation.state` frame after every change."""
    status = conversation.status
    assignee = conversation.assignee if conversation.assignee_id else None
    waiting = status == Status.PENDING and assignee is None
    return {
        "type": "conversation.state",
        "status": status,
        "assignee_name": staff_name(assignee),
        "escalation_reason": conversation.escalation_reason or None,
        # Asked only when nobody answers soon: outside the hours and no agent at the inbox.
        "needs_email": waiting and not conversation.contact_email and not team_answers_now(),
        "rating_requested": status == Status.RESOLVED and conversation.rated_at is None,
        "rated": conversation.rated_at is not None,
    }


def state_frame(conversation_id: uuid.UUID | str) -> dict[str, Any] | None:
    conversation = (
        Conversation.objects.select_related("assignee").filter(pk=conversation_id).first()
    )
    return customer_state(conversation) if conversation else None


def conversation_changed(conversation_id: uuid.UUID | str) -> None:
    """After commit: the customer's sockets get the new `conversation.state`, the agents'
    inbox the new row. Call it from every change to a conversation."""
    events.send_frame_on_commit(conversation_id, lambda: state_frame(conversation_id))
    events.echo_who_answers_on_commit(conversation_id)
    notify_team(conversation_id)


def notify_team(conversation_id: uuid.UUID | str) -> None:
    """Tell the apps that show conversations to the team (the inbox) that this one changed,
    for them to announce after commit: a customer message changes what the team sees but not
    what the customer's page shows."""
    signals.conversation_updated.send(sender=Conversation, conversation_id=conversation_id)
