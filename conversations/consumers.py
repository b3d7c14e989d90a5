"""The customer's websocket. Thin: validate the frame, call one service, answer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from redis.exceptions import RedisError

from support_bot.redis_clients import async_client, key

from . import (
    contact,
    context,
    customer_presence,
    embedding,
    escalation,
    events,
    protocol,
    ratings,
    selectors,
    services,
)
from .customer_presence import leave as mark_left
from .customer_presence import renew as mark_present
from .identity import identify
from .models import Conversation
from .protocol import FrameError
from .sockets import FrameConsumer, FrameHandler

logger = logging.getLogger(__name__)


class ChatConsumer(FrameConsumer):
    socket_kind = "chat"
    conversation: Conversation | None = None
    close_on_too_large = True
    presence_renewed_at = 0.0  # time.monotonic() of the last presence renewal
    # Where the chat started, recorded when this socket stores a conversation (context.py).
    started: context.StartContext | None = None

    def _started(self) -> context.StartContext:
        if self.started is None:
            self.started = context.from_headers(self.scope.get("headers", []))
        return self.started

    async def connect(self) -> None:
        # Accept first so that a refusal can explain itself before the close code.
        await self.accept()
        customer_id = self.scope.get("customer_id")
        if customer_id is None:
            await self._refuse_unauthenticated()
            return
        await self._open(customer_id, self.scope["url_route"]["kwargs"]["conversation_id"])

    async def _refuse_unauthenticated(self) -> None:
        await self._refuse(
            protocol.CLOSE_UNAUTHENTICATED,
            "unauthenticated",
            "Your chat session has expired. Please reload the page.",
        )

    async def _open(self, customer_id: Any, conversation_id: str) -> bool:
        """Open the visitor's conversation on this socket: join its group, send it."""
        try:
            self.conversation = await database_sync_to_async(services.open_conversation)(
                customer_id, conversation_id
            )
        except selectors.ConversationNotFound:
            await self._refuse(
                protocol.CLOSE_NOT_FOUND, "not_found", "This conversation does not exist."
            )
            return False
        except selectors.NotYourConversation:
            await self._refuse(
                protocol.CLOSE_FORBIDDEN, "forbidden", "This conversation is not yours."
            )
            return False
        await self._join(events.conversation_group(self.conversation.pk))
        await self._renew_presence()
        snapshot = await database_sync_to_async(selectors.conversation_snapshot)(self.conversation)
        await self._send(snapshot)
        return True

    def accepts_frames(self) -> bool:
        return self.conversation is not None

    def frame_handlers(self) -> dict[str, FrameHandler]:
        return {
            "message": self._on_message,
            "resume": self._on_resume,
            "ping": self._on_ping,
            "handoff": self._on_handoff,
            "contact": self._on_contact,
            "rate": self._on_rate,
            "context": self._on_context,
        }

    async def _on_context(self, frame: dict[str, Any]) -> None:
        """The page the chat started on and the browser's settings (docs/protocol.md#context),
        kept for the conversation this socket stores; nothing is stored or answered now."""
        self.started = context.with_frame(self._started(), frame)

    async def _on_message(self, frame: dict[str, Any]) -> None:
        message = protocol.parse_message(frame)
        conversation = await self._stored_conversation(message.client_id)
        try:
            await self._check_rate_limit(message.client_id)
        except FrameError:
            # A re-send of a message already stored is acknowledged again, never refused.
            posted = await database_sync_to_async(services.posted_before)(
                conversation, message.client_id
            )
            if posted is None:
                raise
        else:
            # Off asgiref's one shared thread: every socket of this process writes through it
            # otherwise, one message after another. The service is one self-contained
            # transaction.
            posted = await database_sync_to_async(
                services.post_customer_message, thread_sensitive=False
            )(conversation, message.client_id, message.text)
        await self._send(posted.ack_frame())

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        resume = protocol.parse_resume(frame)
        assert self.conversation is not None
        reply = await database_sync_to_async(selectors.reply_in_conversation)(
            self.conversation.pk, resume.reply_id
        )
        if reply is None:
            raise FrameError("unknown_reply", "There is no such reply in this conversation.")
        await self._replay(reply, resume.after)

    async def _on_handoff(self, frame: dict[str, Any]) -> None:
        """ "Talk to a person". The change reaches every socket as `conversation.state`; when
        nothing changed (already with the team), this socket still gets the state."""
        await self._check_rate_limit(None)
        conversation = await self._stored_conversation(None)
        asked = await database_sync_to_async(escalation.ask_for_person)(conversation)
        if not asked.escalated:
            await self._send(asked.state)

    async def _on_contact(self, frame: dict[str, Any]) -> None:
        given = protocol.parse_contact(frame)
        await self._check_rate_limit(None)
        await database_sync_to_async(contact.save_contact_email)(self._conversation(), given.email)

    async def _on_rate(self, frame: dict[str, Any]) -> None:
        rating = protocol.parse_rate(frame)
        await self._check_rate_limit(None)
        await database_sync_to_async(ratings.rate)(
            self._conversation(), rating.score, rating.comment
        )

    # --- Email: what this socket shows, the customer has seen (presence.py, docs/email.md) ----

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await super()._on_ping(frame)
        # A watched page pings every 4 s (docs/protocol.md#heartbeat): one Redis write in a few
        # pings is enough for a presence that lasts LAPSE_S.
        if time.monotonic() - self.presence_renewed_at >= customer_presence.LAPSE_S / 3:
            await self._renew_presence()

    async def _renew_presence(self) -> None:
        self.presence_renewed_at = time.monotonic()
        await self._present(mark_present)

    async def disconnect(self, code: int) -> None:
        await self._present(mark_left)
        await super().disconnect(code)

    async def _present(self, mark: Callable[[uuid.UUID, str], Awaitable[None]]) -> None:
        if self.conversation is None:
            return
        try:
            await mark(self.conversation.pk, self.channel_name)
        except RedisError as error:
            # Unknown presence only means an email the customer may not need.
            logger.warning("customer presence not recorded: %s", error)

    def _conversation(self) -> Conversation:
        assert self.conversation is not None
        return self.conversation

    async def _stored_conversation(self, client_id: str | None) -> Conversation:
        """The conversation, stored first if this visitor's first words start it: new
        conversations are budgeted per address (CHAT_NEW_CONVERSATIONS_PER_IP), so a script
        minting visitors cannot multiply rows and bot replies."""
        conversation = self._conversation()
        if services.is_pending(conversation):
            await self._spend(
                client_id, ("new-conversation", settings.CHAT_NEW_CONVERSATIONS_PER_IP, True)
            )
            conversation = await database_sync_to_async(services.store_conversation)(
                conversation, self._started()
            )
            self.conversation = conversation
        return conversation

    async def _check_rate_limit(self, client_id: str | None) -> None:
        """Each visitor's budget (CHAT_RATE_LIMIT), and their address's (CHAT_IP_RATE_LIMIT),
        which visitors minted by one script share."""
        await self._spend(
            client_id,
            ("rate", settings.CHAT_RATE_LIMIT, False),
            ("rate-ip", settings.CHAT_IP_RATE_LIMIT, True),
        )

    async def _spend(self, client_id: str | None, *budgets: tuple[str, str, bool]) -> None:
        """One of each budget (name, "limit/seconds" or "off", whether per address), in one
        Redis round trip."""
        address = (self.scope.get("client") or ("unknown", 0))[0]
        buckets = [
            (key(name, address if per_ip else self.scope["customer_id"]), spec.partition("/")[::2])
            for name, spec, per_ip in budgets
            if spec != "off"
        ]
        if not buckets:
            return
        redis = async_client()
        async with redis.pipeline(transaction=True) as pipe:
            for bucket, (_limit, window) in buckets:
                # SET NX EX starts the window with its expiry; INCR keeps that expiry.
                pipe.set(bucket, 0, ex=int(window), nx=True)
                pipe.incr(bucket)
            counts = (await pipe.execute())[1::2]
        for (bucket, (limit, _window)), count in zip(buckets, counts, strict=True):
            if count > int(limit):
                ttl = await redis.ttl(bucket)
                raise FrameError(
                    "rate_limited",
                    f"You're sending messages too quickly. Please wait {max(ttl, 1)} seconds.",
                    client_id,
                )


class WidgetConsumer(ChatConsumer):
    """The widget's socket (/ws/widget/), opened by the iframe page on another site. A
    third-party iframe keeps no cookie, so the first frame names the visitor:

        {"type": "auth", "token": "<the token a session frame gave, or empty for a new
         visitor>", "conversation": "<id, or empty for the current one>", "site": "<the host
         page's origin>", "identity": <optional: the host page's signed-in user,
         {"id", "name", "email", "user_hash"} (identity.py)>}

    The host page's origin must be allowed to embed the widget (conversations/embedding.py),
    checked on every socket; the socket's own Origin (the iframe's, Support Bot's) is checked by
    the ASGI router as for every socket. A new visitor gets a token and nothing is stored until
    their first message. Answer: a `session` frame (the token to keep, the conversation), then
    the conversation as on /ws/chat/."""

    AUTH_TIMEOUT_S = 10.0
    authenticating = True
    auth_timer: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        await self.accept()
        loop = asyncio.get_running_loop()
        self.auth_timer = loop.call_later(
            self.AUTH_TIMEOUT_S, lambda: loop.create_task(self._auth_timed_out())
        )

    async def _auth_timed_out(self) -> None:
        if self.authenticating:
            self.authenticating = False
            await self._refuse_unauthenticated()

    async def disconnect(self, code: int) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        await super().disconnect(code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.authenticating:
            await super().receive(text_data, bytes_data)
            return
        self.authenticating = False
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        try:
            frame = protocol.decode(text_data)
        except FrameError:
            frame = {}
        if frame.get("type") != "auth":
            await self._refuse_unauthenticated()
            return
        # Off the event loop: a configuration change makes the cached list reload.
        if not await database_sync_to_async(embedding.may_embed)(_text(frame.get("site"))):
            await self._refuse(
                protocol.CLOSE_FORBIDDEN,
                "site_not_allowed",
                "This site may not embed the chat.",
            )
            return
        token = frame.get("token") or ""
        if token:
            customer_id = embedding.visitor_from_token(token)
            if customer_id is None:
                await self._refuse_unauthenticated()
                return
        else:
            customer_id = services.new_visitor_id()
        requested = _text(frame.get("conversation"))[:64]
        session: dict[str, Any] = {}
        if "identity" in frame:  # the host page's signed-in user (identity.py)
            identified = await database_sync_to_async(identify)(customer_id, frame["identity"])
            requested = identified.conversation_to_open(customer_id, requested)
            customer_id = identified.customer_id
            session = identified.session_fields()
        # The per-visitor budgets (rate limits) read the visitor from the scope.
        self.scope["customer_id"] = customer_id
        conversation_id = requested or str(
            await database_sync_to_async(services.page_conversation_id)(customer_id)
        )
        await self._send(
            {
                "type": "session",
                "token": embedding.visitor_token(customer_id),
                "conversation_id": conversation_id,
                **session,
            }
        )
        await self._open(customer_id, conversation_id)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
