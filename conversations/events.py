"""What goes to browsers: group names, events sent after commit, and live reply frames.

Every reply frame is first appended to a short-lived replay log (a Redis stream per reply,
entry id = seq) and then sent to the conversation's group, so a socket that reconnects can
ask for everything after the last seq it saw.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from .models import Turn
from .redis_clients import async_client, key, run_in_thread_loop


def conversation_group(conversation_id: UUID | str) -> str:
    return f"conversation.{conversation_id}"


def _group_message(frame: dict[str, Any]) -> dict[str, Any]:
    # Serialised once here rather than by every consumer in the group.
    return {"type": "frame.forward", "json": json.dumps(frame, separators=(",", ":"))}


def send_turn_on_commit(turn: Turn) -> None:
    """Tell every socket of the conversation about a new turn, once it is committed."""
    group = conversation_group(turn.conversation_id)
    message = _group_message({"type": "turn", "turn": turn.as_event()})
    transaction.on_commit(lambda: async_to_sync(get_channel_layer().group_send)(group, message))


# --- Reply frames -----------------------------------------------------------------------------


def _log_key(reply_id: int) -> str:
    return key("reply", reply_id)


async def _append_and_send(group: str, reply_id: int, seq: int, frame: dict[str, Any]) -> None:
    message = _group_message(frame)
    redis = async_client()
    log = _log_key(reply_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(log, {"f": message["json"]}, id=f"{seq}-0")
        pipe.expire(log, settings.REPLY_LOG_TTL_S)
        await pipe.execute()
    await get_channel_layer().group_send(group, message)


async def replay_after(reply_id: int, after: int) -> list[str]:
    """The serialised frames of a reply with seq > after, in order."""
    entries = await async_client().xrange(_log_key(reply_id), min=f"({after}-0", max="+")
    return [str(fields["f"]) for _id, fields in entries or [] if fields]


async def _log_position(reply_id: int) -> tuple[int, int]:
    """(last seq, number of starts) already in a reply's log: (0, 0) for a fresh reply."""
    redis = async_client()
    last = await redis.xrevrange(_log_key(reply_id), count=1)
    if not last:
        return 0, 0
    # Only replies taken over from a lost worker get here, so reading the log is rare.
    frames = await replay_after(reply_id, 0)
    starts = sum('"type":"reply.start"' in frame for frame in frames)
    return int(str(last[0][0]).split("-")[0]), starts


class ReplyPublisher:
    """Publishes one reply's frames with consecutive seq numbers, from a worker thread."""

    def __init__(self, turn: Turn) -> None:
        self.reply_id = turn.pk
        self.group = conversation_group(turn.conversation_id)
        # A reply taken over from a lost worker continues the numbering its log already has.
        self.seq, self.starts = run_in_thread_loop(_log_position(self.reply_id))

    def _publish(self, frame: dict[str, Any]) -> None:
        self.seq += 1
        frame = {**frame, "reply_id": self.reply_id, "seq": self.seq}
        run_in_thread_loop(_append_and_send(self.group, self.reply_id, self.seq, frame))

    def start(self) -> None:
        self.starts += 1
        self._publish({"type": "reply.start", "attempt": self.starts})

    def delta(self, text: str) -> None:
        self._publish({"type": "reply.delta", "text": text})

    def done(self, turn: Turn, error: dict[str, str] | None = None) -> None:
        self._publish(done_frame(turn, error))


def done_frame(turn: Turn, error: dict[str, str] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "reply.done",
        "reply_id": turn.pk,
        "status": turn.status,
        "text": turn.text,
        "sources": turn.as_event()["sources"],
    }
    if error:
        frame["error"] = error
    return frame
