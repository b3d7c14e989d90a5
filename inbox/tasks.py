"""Celery tasks: take ids, call one service, send the result to the requesting agent only."""

from __future__ import annotations

import logging

from celery import shared_task

from . import assist as assistant
from . import events

logger = logging.getLogger(__name__)

FAILED = "The assistant couldn't help with this just now. Please try again."


@shared_task(queue="replies", ignore_result=True, acks_late=True, time_limit=120)
def assist(conversation_id: str, agent_id: int, kind: str) -> None:
    """A summary or suggested reply for one agent, by the configured provider. It goes to that
    agent's sockets (group inbox.user.<id>) and nowhere else: nothing reaches the customer
    unless the agent sends it."""
    try:
        frame = assistant.run_assist(conversation_id, kind).frame(conversation_id)
    except Exception:
        logger.exception("assist %s for conversation %s failed", kind, conversation_id)
        frame = {
            "type": "assist",
            "conversation_id": str(conversation_id),
            "kind": kind,
            "text": "",
            "sources": [],
            "error": FAILED,
        }
    events.send_to_agent(agent_id, frame)
