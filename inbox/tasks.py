"""Celery tasks: take ids, call one service, send the result to the requesting agent only."""

from __future__ import annotations

from celery import shared_task

from . import assist as assistant
from . import events


@shared_task(queue="replies", ignore_result=True, acks_late=True, time_limit=120)
def assist(conversation_id: str, agent_id: int, kind: str) -> None:
    """A summary or suggested reply for one agent, by the conversation's prompt version. It
    goes to that agent's sockets (group inbox.user.<id>) and nowhere else: nothing reaches the
    customer unless the agent sends it. A failure is a frame with an error, never a retry."""
    frame = assistant.assist_frame(conversation_id, kind)
    events.send_to_agent(agent_id, frame)
