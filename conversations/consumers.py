"""The customer's websocket. Thin: validate the frame, call one service, answer."""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import events, handoff, protocol, services
from .models import Conversation, Turn
from .protocol import FrameError
from .redis_clients import async_client, key

logger = logging.getLogger(__name__)


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    group: str | None = None

    async def connect(self) -> None:
        # Accept first so that a refusal can explain itself before the close code.
        await self.accept()
        customer_id = self.scope.get("customer_id")
        if customer_id is None:
            await self._refuse(
                protocol.CLOSE_UNAUTHENTICATED,
                "unauthenticated",
                "Your chat session has expired. Please reload the page.",
            )
            return
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        try:
            self.conversation = await database_sync_to_async(services.conversation_for_customer)(
                customer_id, conversation_id
            )
        except services.ConversationNotFound:
            await self._refuse(
                protocol.CLOSE_NOT_FOUND, "not_found", "This conversation does not exist."
            )
            return
        except services.NotYourConversation:
            await self._refuse(
                protocol.CLOSE_FORBIDDEN, "forbidden", "This conversation is not yours."
            )
            return
        self.group = events.conversation_group(self.conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await database_sync_to_async(services.conversation_snapshot)(self.conversation)
        await self._send(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        try:
            frame = protocol.decode(text_data)
            handler = {
                "message": self._on_message,
                "resume": self._on_resume,
                "ping": self._on_ping,
                "handoff": self._on_handoff,
                "contact": self._on_contact,
                "rate": self._on_rate,
            }.get(frame["type"])
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            await handler(frame)
        except handoff.HandoffError as refused:
            await self._send({"type": "error", "code": refused.code, "message": refused.message})
        except FrameError as error:
            await self._send(error.as_frame())
            if error.code == "frame_too_large":
                await self.close(code=protocol.CLOSE_TOO_LARGE)

    async def _on_message(self, frame: dict[str, Any]) -> None:
        message = protocol.parse_message(frame)
        await self._check_rate_limit(message.client_id)
        # Off asgiref's one shared thread: every socket of this process writes through it
        # otherwise, one message after another. The service is one self-contained transaction.
        posted = await database_sync_to_async(
            services.post_customer_message, thread_sensitive=False
        )(self.conversation, message.client_id, message.text)
        await self._send(posted.ack_frame())

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        resume = protocol.parse_resume(frame)
        assert self.conversation is not None
        reply = await database_sync_to_async(services.reply_in_conversation)(
            self.conversation.pk, resume.reply_id
        )
        if reply is None:
            raise FrameError("unknown_reply", "There is no such reply in this conversation.")
        frames = await events.replay_after(reply.pk, resume.after)
        for raw in frames:
            await self.send(text_data=raw)
        finished = reply.status in (Turn.Status.DONE, Turn.Status.FAILED)
        if finished and not any(events.is_frame(raw, "reply.done") for raw in frames):
            # The replay log has expired (or the client saw it all but the end): the stored
            # turn is the authority. seq is past anything the client has applied.
            await self._send({**events.done_frame(reply), "seq": resume.after + 1})

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self._send({"type": "pong"})

    async def _on_handoff(self, frame: dict[str, Any]) -> None:
        """"Talk to a person". The change reaches every socket as `conversation.state`; when
        nothing changed (already with the team), this socket still gets the state."""
        await self._check_rate_limit(None)
        asked = await database_sync_to_async(handoff.ask_for_person)(self._conversation())
        if not asked.escalated:
            await self._send(asked.state)

    async def _on_contact(self, frame: dict[str, Any]) -> None:
        contact = protocol.parse_contact(frame)
        await self._check_rate_limit(None)
        await database_sync_to_async(handoff.save_contact_email)(
            self._conversation(), contact.email
        )

    async def _on_rate(self, frame: dict[str, Any]) -> None:
        rating = protocol.parse_rate(frame)
        await self._check_rate_limit(None)
        await database_sync_to_async(handoff.rate)(
            self._conversation(), rating.score, rating.comment
        )

    def _conversation(self) -> Conversation:
        assert self.conversation is not None
        return self.conversation

    async def _check_rate_limit(self, client_id: str | None) -> None:
        limit, _, window = settings.CHAT_RATE_LIMIT.partition("/")
        bucket = key("rate", self.scope["customer_id"])
        redis = async_client()
        async with redis.pipeline(transaction=True) as pipe:
            # SET NX EX starts the window with its expiry; INCR keeps that expiry.
            pipe.set(bucket, 0, ex=int(window), nx=True)
            pipe.incr(bucket)
            _, count = await pipe.execute()
        if count > int(limit):
            ttl = await redis.ttl(bucket)
            raise FrameError(
                "rate_limited",
                f"You're sending messages too quickly. Please wait {max(ttl, 1)} seconds.",
                client_id,
            )

    async def frame_forward(self, event: dict[str, Any]) -> None:
        """A frame for every socket of this conversation, already serialised by events.py."""
        await self.send(text_data=event["json"])

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def _refuse(self, close_code: int, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)
