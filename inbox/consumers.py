"""The agents' websocket /ws/inbox/. Thin: check who it is, join groups, forward frames.

Staff session auth (AuthMiddlewareStack on this route only): a customer's visitor cookie
opens nothing here. Close 4401 without a logged-in user, 4403 without
conversations.work_inbox. Actions go through the JSON endpoints (views.py); this socket
only lists, watches and tells the customer the agent is typing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from conversations import events as chat_events
from conversations import protocol
from conversations.models import Turn
from conversations.protocol import FrameError

from . import events, services

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def _may_work_inbox(user: Any) -> bool:
    return services.can(user, services.WORK_INBOX)


def _reply_status(conversation_id: uuid.UUID, reply_id: int) -> str | None:
    reply = Turn.objects.filter(
        pk=reply_id, conversation_id=conversation_id, author=Turn.Author.BOT
    ).first()
    return None if reply is None else reply.status


class InboxConsumer(AsyncWebsocketConsumer):
    user: Any = None
    watching: uuid.UUID | None = None
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "unauthenticated", "Please log in as staff.")
            return
        if not await database_sync_to_async(_may_work_inbox)(user):
            await self._refuse(
                CLOSE_FORBIDDEN, "forbidden", "You don't have permission to work the inbox."
            )
            return
        self.user = user
        await self._join(events.INBOX_GROUP)
        await self._join(events.user_group(user.pk))
        await self._send(
            {"type": "hello", "me": {"id": user.pk, "name": services.display_name(user)}}
        )

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def _leave(self, group: str) -> None:
        if group in self.groups_joined:
            self.groups_joined.remove(group)
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user is None:
            return
        try:
            frame = protocol.decode(text_data)
            handler = {
                "list": self._on_list,
                "watch": self._on_watch,
                "unwatch": self._on_unwatch,
                "typing": self._on_typing,
                "resume": self._on_resume,
                "ping": self._on_ping,
            }.get(frame["type"])
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            await handler(frame)
        except FrameError as error:
            await self._send(error.as_frame())
        except services.InboxError as error:
            await self._send({"type": "error", "code": error.code, "message": error.message})

    async def _on_list(self, frame: dict[str, Any]) -> None:
        rows = await database_sync_to_async(services.inbox_rows)()
        await self._send({"type": "inbox", "rows": rows})

    def _conversation_id(self, frame: dict[str, Any]) -> uuid.UUID:
        try:
            return uuid.UUID(str(frame.get("conversation_id")))
        except ValueError:
            raise FrameError("bad_frame", "conversation_id must be a conversation's id.") from None

    async def _on_watch(self, frame: dict[str, Any]) -> None:
        conversation_id = self._conversation_id(frame)
        await self._on_unwatch(frame)
        # Join first, then read: nothing that happens in between is missed (the page
        # de-duplicates by turn id and seq).
        await self._join(chat_events.conversation_group(conversation_id))
        await self._join(events.notes_group(conversation_id))
        self.watching = conversation_id
        try:
            data = await database_sync_to_async(services.conversation_for_agent)(conversation_id)
        except services.InboxError:
            await self._on_unwatch(frame)
            raise
        await self._send(data)

    async def _on_unwatch(self, frame: dict[str, Any]) -> None:
        if self.watching is not None:
            await self._leave(chat_events.conversation_group(self.watching))
            await self._leave(events.notes_group(self.watching))
            self.watching = None

    async def _on_typing(self, frame: dict[str, Any]) -> None:
        conversation_id = self._conversation_id(frame)
        if conversation_id != self.watching:
            raise FrameError("bad_frame", "Watch a conversation before typing in it.")
        active = frame.get("active")
        if not isinstance(active, bool):
            raise FrameError("bad_frame", "typing needs active: true or false.")
        await chat_events.send_agent_typing(
            conversation_id, services.display_name(self.user), active
        )

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        resume = protocol.parse_resume(frame)
        if self.watching is None:
            raise FrameError("unknown_reply", "Watch a conversation first.")
        status = await database_sync_to_async(_reply_status)(self.watching, resume.reply_id)
        if status is None:
            raise FrameError("unknown_reply", "There is no such reply in this conversation.")
        frames = await chat_events.replay_after(resume.reply_id, resume.after)
        for raw in frames:
            await self.send(text_data=raw)
        finished = status in (Turn.Status.DONE, Turn.Status.FAILED)
        if finished and not any(chat_events.is_frame(raw, "reply.done") for raw in frames):
            reply = await database_sync_to_async(Turn.objects.get)(pk=resume.reply_id)
            await self._send({**chat_events.done_frame(reply), "seq": resume.after + 1})

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self._send({"type": "pong"})

    async def frame_forward(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["json"])

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def _refuse(self, close_code: int, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)
