"""The agents' websocket /ws/inbox/. Thin: check who it is, join groups, forward frames.

Staff session auth (AuthMiddlewareStack on this route only): a customer's visitor cookie
opens nothing here. Close 4401 without a logged-in user, 4403 without
conversations.work_inbox. Actions go through the JSON endpoints (views.py); this socket
only lists, watches and tells the customer the agent is typing. Watching also tells the other
agents watching who views and types there (collision detection, inbox/viewers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from channels.db import database_sync_to_async

from conversations import events as chat_events
from conversations import protocol, selectors
from conversations.models import display_name
from conversations.protocol import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, FrameError
from conversations.sockets import FrameConsumer, FrameHandler

from . import events, presence, services, viewers


def _may_work_inbox(user: Any) -> bool:
    return services.can(user, services.WORK_INBOX)


class InboxConsumer(FrameConsumer):
    socket_kind = "inbox"
    user: Any = None
    watching: uuid.UUID | None = None
    name: str = ""
    renewing: asyncio.Task[None] | None = None

    async def connect(self) -> None:
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
        self.name = display_name(user)
        await self._join(events.INBOX_GROUP)
        await self._join(events.user_group(user.pk))
        # Present before the page asks for the list: no row falls between the two.
        await presence.arrive(user.pk, self.channel_name)
        self.renewing = asyncio.create_task(self._stay_present())
        await self._send({"type": "hello", "me": {"id": user.pk, "name": display_name(user)}})

    async def _stay_present(self) -> None:
        while True:
            await asyncio.sleep(presence.RENEW_S)
            with contextlib.suppress(Exception):  # Redis away: the next renewal tries again
                await presence.renew(self.user.pk, self.channel_name)
                if self.watching is not None:
                    await viewers.renew(self.watching, self.user.pk, self.name, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.renewing is not None:
            self.renewing.cancel()
        if self.user is not None:
            with contextlib.suppress(Exception):  # lapses by itself if Redis is away
                await presence.leave(self.user.pk, self.channel_name)
            with contextlib.suppress(Exception):
                await self._stop_viewing()
        await super().disconnect(code)

    def accepts_frames(self) -> bool:
        return self.user is not None

    def frame_handlers(self) -> dict[str, FrameHandler]:
        return {
            "list": self._on_list,
            "watch": self._on_watch,
            "unwatch": self._on_unwatch,
            "typing": self._on_typing,
            "resume": self._on_resume,
            "ping": self._on_ping,
        }

    async def _on_list(self, frame: dict[str, Any]) -> None:
        # The first page of the default view (the page itself reads pages over HTTP).
        page = await database_sync_to_async(services.inbox_rows)(self.user)
        await self._send({"type": "inbox", **page})

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
        await viewers.arrive(conversation_id, self.user.pk, self.name, self.channel_name)
        await events.send_viewers(conversation_id)

    async def _on_unwatch(self, frame: dict[str, Any]) -> None:
        if self.watching is not None:
            await self._leave(chat_events.conversation_group(self.watching))
            await self._leave(events.notes_group(self.watching))
            await self._stop_viewing()

    async def _stop_viewing(self) -> None:
        """No longer viewing: the others watching see it at once."""
        watching, self.watching = self.watching, None
        if watching is not None:
            await viewers.leave(watching, self.user.pk, self.name, self.channel_name)
            await events.send_viewers(watching)

    async def _on_typing(self, frame: dict[str, Any]) -> None:
        conversation_id = self._conversation_id(frame)
        if conversation_id != self.watching:
            raise FrameError("bad_frame", "Watch a conversation before typing in it.")
        active = frame.get("active")
        if not isinstance(active, bool):
            raise FrameError("bad_frame", "typing needs active: true or false.")
        where = frame.get("where", "reply")
        if where not in ("reply", "note"):
            raise FrameError("bad_frame", 'typing\'s where is "reply" or "note".')
        if where == "reply":  # the customer sees a reply coming, never a note
            await chat_events.send_agent_typing(conversation_id, self.name, active)
        agent = {"id": self.user.pk, "name": self.name}
        await events.send_team_typing(conversation_id, agent, where, active)

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        resume = protocol.parse_resume(frame)
        if self.watching is None:
            raise FrameError("unknown_reply", "Watch a conversation first.")
        reply = await database_sync_to_async(selectors.reply_in_conversation)(
            self.watching, resume.reply_id
        )
        if reply is None:
            raise FrameError("unknown_reply", "There is no such reply in this conversation.")
        await self._replay(reply, resume.after)
