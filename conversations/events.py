"""What goes to browsers: group names, events sent after commit, and live reply frames.

Every reply frame is first appended to a short-lived replay log (a Redis stream per reply,
entry id = seq) and then sent to the conversation's group, so a socket that reconnects can
ask for everything after the last seq it saw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

from support_bot.redis_clients import async_client, key, sync_client

from .models import Conversation, Turn

logger = logging.getLogger(__name__)


def conversation_group(conversation_id: UUID | str) -> str:
    return f"conversation.{conversation_id}"


def group_message(frame: dict[str, Any]) -> dict[str, Any]:
    # Serialised once here rather than by every consumer in the group.
    return {"type": "frame.forward", "json": json.dumps(frame, separators=(",", ":"))}


def is_frame(raw: str, frame_type: str) -> bool:
    """Whether a frame serialised by group_message has this type, without parsing it."""
    return f'"type":"{frame_type}"' in raw


def publish(group: str, frame: dict[str, Any]) -> None:
    """Send a frame to every socket in a group, from sync code: one PUBLISH on the channel the
    layer's group_send uses, made on this thread. async_to_sync(group_send) would instead wait
    its turn on the web process's event loop, which is busiest exactly under a burst."""
    message = get_channel_layer().serialize(group_message(frame))
    sync_client().publish(_group_channel(group), message)


def publish_on_commit(group: str, build: Callable[[], dict[str, Any] | None]) -> None:
    """Once the current transaction commits (at once outside one), build a frame from the
    committed state and publish it to the group (None: send nothing). Every event sent after
    a commit goes through here.

    robust: with Redis unreachable the change is stored all the same, the hooks after this one
    (queueing a reply) still run and the request gets its answer; a page that missed the event
    reads the state again when it next connects.
    """

    def send() -> None:
        frame = build()
        if frame is not None:
            publish(group, frame)

    transaction.on_commit(send, robust=True)


def send_turn_on_commit(turn: Turn) -> None:
    """Tell every socket of the conversation about a new turn, once it is committed."""
    frame = {"type": "turn", "turn": turn.as_event()}
    publish_on_commit(conversation_group(turn.conversation_id), lambda: frame)


def send_frame_on_commit(
    conversation_id: UUID | str, build: Callable[[], dict[str, Any] | None]
) -> None:
    """publish_on_commit to every socket of the conversation."""
    publish_on_commit(conversation_group(conversation_id), build)


def typing_frame(name: str | None, active: bool) -> dict[str, Any]:
    """An agent starts or stops typing in a conversation, as the customer's page receives it."""
    return {"type": "typing", "author": "agent", "name": name or None, "active": bool(active)}


async def send_agent_typing(conversation_id: UUID | str, name: str | None, active: bool) -> None:
    """For the agent's socket: show (or hide) "<name> is typing…" on the customer's page. Not
    stored. The page hides the indicator by itself when no refresh comes for a few seconds."""
    await get_channel_layer().group_send(
        conversation_group(conversation_id), group_message(typing_frame(name, active))
    )


# --- Reply frames -----------------------------------------------------------------------------


def _log_key(reply_id: int) -> str:
    return key("reply", reply_id)


def _group_channel(group: str) -> str:
    # The Redis channel RedisPubSubChannelLayer.group_send publishes a group's messages on.
    # The socket tests receive every reply frame through it, so a change would show at once.
    return f"{settings.CHANNEL_LAYER_PREFIX}__group__{group}"


async def replay_after(reply_id: int, after: int) -> list[str]:
    """The serialised frames of a reply with seq > after, in order."""
    entries = await async_client().xrange(_log_key(reply_id), min=f"({after}-0", max="+")
    return [str(fields["f"]) for _id, fields in entries or [] if fields]


class ReplyPublisher:
    """Publishes one reply's frames with consecutive seq numbers, from a worker thread.

    Each frame costs one Redis round trip: append to the replay log and publish to the
    conversation's group in one pipeline, with no event loop in the worker thread. While Redis
    is unreachable the reply goes on (the database keeps it); once Redis answers again the
    text so far is sent over as a new start, since frames were lost with it.
    """

    # A reply taken over after its replay log was lost numbers its frames from here on, past
    # anything an earlier attempt can have sent, so pages apply them (reply.start jumps gaps).
    SEQ_PER_ATTEMPT = 1_000_000

    def __init__(self, turn: Turn) -> None:
        self.reply_id = turn.pk
        self.log = _log_key(turn.pk)
        self.person_has_it = person_has_it_key(turn.conversation_id)
        self.channel = _group_channel(conversation_group(turn.conversation_id))
        self.layer = get_channel_layer()
        self.redis = sync_client()
        self.text = ""  # what this start has said so far
        self.behind = False  # frames were lost while Redis was unreachable
        # A reply taken over from a lost worker continues the numbering its log already has.
        self.seq, self.starts = self._log_position(turn.attempt)

    def _log_position(self, attempt: int) -> tuple[int, int]:
        """(last seq, number of starts) already in the log: (0, 0) for a fresh reply."""
        try:
            last = self.redis.xrevrange(self.log, count=1)
            # Only replies taken over from a lost worker have a log, so reading it is rare.
            entries = (self.redis.xrange(self.log) or []) if last else []
        except RedisError as exc:
            self._fell_behind(exc)
            last = None
        if not last:
            earlier = max(0, attempt - 1)
            return earlier * self.SEQ_PER_ATTEMPT, earlier
        starts = sum(is_frame(str(fields["f"]), "reply.start") for _id, fields in entries if fields)
        return int(str(last[0][0]).split("-")[0]), starts

    def _publish(self, frame: dict[str, Any]) -> bool:
        """Send a frame; True while the conversation is still the bot's (see person_has_it_key),
        read in the same round trip."""
        self.seq += 1
        message = group_message({**frame, "reply_id": self.reply_id, "seq": self.seq})
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.log, {"f": message["json"]}, id=f"{self.seq}-0")
        pipe.expire(self.log, settings.REPLY_LOG_TTL_S)
        pipe.publish(self.channel, self.layer.serialize(message))
        pipe.exists(self.person_has_it)
        return not pipe.execute()[-1]

    def _send(self, frame: dict[str, Any]) -> bool:
        if self.behind and not self._catch_up():
            return True
        try:
            return self._publish(frame)
        except RedisError as exc:
            self._fell_behind(exc)
            return True

    def _catch_up(self) -> bool:
        """Start the text over with everything said so far; False while Redis is still away."""
        try:
            self._publish({"type": "reply.start", "attempt": self.starts})
            self.behind = False
            logger.info("reply %s: Redis is back; its text so far sent again", self.reply_id)
            return True
        except RedisError:
            return False

    def _fell_behind(self, exc: RedisError) -> None:
        if not self.behind:
            logger.warning("reply %s: frames not sent (%s); the reply goes on", self.reply_id, exc)
        self.behind = True

    def start(self) -> None:
        self.starts += 1
        self.text = ""
        if self.behind:
            self._catch_up()  # itself a start
        else:
            self._send({"type": "reply.start", "attempt": self.starts})

    def waiting(self, text: str, seconds: float) -> bool:
        """The reply waits for its turn in the model's budget: a short line (`text`, in the
        customer's language) the page shows until the reply's text starts, with the expected
        wait. A numbered frame like the others, so a page that resumes sees it too."""
        frame = {"type": "reply.waiting", "text": text, "wait_s": max(1, round(seconds))}
        return self._send(frame)

    def delta(self, text: str) -> bool:
        """Send a piece of the reply; False once a person has the conversation (stop)."""
        self.text += text
        if self.behind:
            if not self._catch_up():
                return True
            text = self.text
        return self._send({"type": "reply.delta", "text": text})

    def done(self, turn: Turn, error: dict[str, str] | None = None) -> None:
        # Lost with Redis, the page's resume gets the stored reply (sockets.FrameConsumer).
        self._send(done_frame(turn, error))


def done_frame(turn: Turn, error: dict[str, str] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "reply.done",
        "reply_id": turn.pk,
        "status": turn.status,
        "text": turn.text,
        "sources": turn.as_event()["sources"],
        "offers_handoff": turn.offers_person,
    }
    if error:
        frame["error"] = error
    return frame


# --- A person has the conversation ------------------------------------------------------------


def person_has_it_key(conversation_id: UUID | str) -> str:
    """Set while the conversation is not the bot's (a person was asked for, has it, snoozed or
    resolved it): a reply that is streaming reads it with every frame it sends, for free, and
    stops. The database stays the authority; this is its after-commit echo."""
    return key("person-has-it", conversation_id)


def echo_who_answers_on_commit(conversation_id: UUID | str) -> None:
    """After commit, set or clear person_has_it_key from the conversation's committed state."""

    def echo() -> None:
        client = sync_client()
        conversation = (
            Conversation.objects.only("status", "assignee_id").filter(pk=conversation_id).first()
        )
        if conversation is None or conversation.bot_answers:
            client.delete(person_has_it_key(conversation_id))
        else:
            # Outlives any reply that could still be streaming (a lost worker's included).
            ttl = int(settings.REPLY_LEASE_S + settings.REPLY_DEADLINE_S)
            client.set(person_has_it_key(conversation_id), 1, ex=ttl)

    transaction.on_commit(echo, robust=True)
