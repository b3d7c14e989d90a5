"""Workflows across models: what happens when a customer writes and when the bot replies.

Views, consumers and tasks stay thin and call one function here.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from . import llm
from .events import ReplyPublisher, send_turn_on_commit
from .llm.base import ChatMessage, Finished, Provider, ProviderError, ReplyRequest, TextDelta
from .models import Conversation, Customer, Turn

logger = logging.getLogger(__name__)

APOLOGY = (
    "Sorry — I couldn't finish my answer because of a technical problem on our side. "
    "Please try again in a moment, or ask to talk to a person and our team will help."
)


class ConversationNotFound(Exception):
    pass


class NotYourConversation(Exception):
    pass


# --- Customers and conversations -------------------------------------------------------------


def customer_for_visitor(customer_id: uuid.UUID | None) -> tuple[Customer, bool]:
    """The visitor's Customer, or a new one when the cookie is missing or unknown."""
    if customer_id is not None:
        customer = Customer.objects.filter(pk=customer_id).first()
        if customer is not None:
            return customer, False
    return Customer.objects.create(), True


def current_conversation(customer: Customer) -> Conversation:
    """The customer's latest conversation that is not resolved, or a new one."""
    conversation = (
        customer.conversations.exclude(status=Conversation.Status.RESOLVED)
        .order_by("-created_at")
        .first()
    )
    return conversation or Conversation.objects.create(customer=customer)


def conversation_for_customer(customer_id: uuid.UUID, conversation_id: str) -> Conversation:
    try:
        conversation = Conversation.objects.get(pk=uuid.UUID(str(conversation_id)))
    except (ValueError, Conversation.DoesNotExist):
        raise ConversationNotFound(conversation_id) from None
    if conversation.customer_id != customer_id:
        raise NotYourConversation(conversation_id)
    return conversation


def conversation_snapshot(conversation: Conversation, limit: int = 200) -> dict[str, Any]:
    """The frame a socket receives on connect: status and the latest turns, oldest first."""
    turns = list(conversation.turns.select_related("agent").order_by("-id")[:limit])
    turns.reverse()
    return {
        "type": "conversation",
        "id": str(conversation.pk),
        "status": conversation.status,
        "turns": [turn.as_event() for turn in turns],
    }


def reply_in_conversation(conversation_id: uuid.UUID, reply_id: int) -> Turn | None:
    return Turn.objects.filter(
        pk=reply_id, conversation_id=conversation_id, author=Turn.Author.BOT
    ).first()


# --- A customer writes ------------------------------------------------------------------------


@dataclass(frozen=True)
class PostedMessage:
    turn: Turn
    reply: Turn | None
    duplicate: bool

    def ack_frame(self) -> dict[str, Any]:
        return {
            "type": "ack",
            "client_id": self.turn.client_message_id,
            "turn_id": self.turn.pk,
            "reply_id": self.reply.pk if self.reply else None,
            "duplicate": self.duplicate,
        }


def post_customer_message(conversation: Conversation, client_id: str, text: str) -> PostedMessage:
    """Store a customer's message and queue the bot's reply, once per client message id.

    Returns only after the commit, so an acknowledgement built from the result never
    acknowledges a message that could still be lost.
    """
    existing = _already_posted(conversation, client_id)
    if existing:
        if existing.reply is not None and existing.reply.status == Turn.Status.QUEUED:
            # The browser re-sends a message it saw no ack for. If the first try died between
            # its commit and queueing the reply, nothing else would ever queue it; an extra
            # task for a queued reply is harmless, as a reply is claimed only once.
            _queue_reply_on_commit(existing.reply.pk)
        return existing
    try:
        with transaction.atomic():
            turn = Turn.objects.create(
                conversation=conversation,
                author=Turn.Author.CUSTOMER,
                text=text,
                client_message_id=client_id,
            )
            conversation.touch()
            reply = None
            if conversation.bot_answers:
                reply = Turn.objects.create(
                    conversation=conversation,
                    author=Turn.Author.BOT,
                    status=Turn.Status.QUEUED,
                    reply_to=turn,
                )
            send_turn_on_commit(turn)
            if reply is not None:
                _queue_reply_on_commit(reply.pk)
    except IntegrityError:
        # The same client id raced in on another socket; that one won.
        existing = _already_posted(conversation, client_id)
        if existing is None:
            raise
        return existing
    return PostedMessage(turn=turn, reply=reply, duplicate=False)


def _already_posted(conversation: Conversation, client_id: str) -> PostedMessage | None:
    turn = (
        Turn.objects.filter(conversation=conversation, client_message_id=client_id)
        .select_related("reply")
        .first()
    )
    if turn is None:
        return None
    return PostedMessage(turn=turn, reply=getattr(turn, "reply", None), duplicate=True)


def _queue_reply_on_commit(reply_id: int) -> None:
    from .tasks import generate_reply

    transaction.on_commit(lambda: generate_reply.delay(reply_id))


# --- The bot replies --------------------------------------------------------------------------


def build_request(reply: Turn) -> ReplyRequest:
    """System prompt plus the latest turns before this reply (bounded, one query)."""
    history = list(
        Turn.objects.filter(conversation_id=reply.conversation_id, id__lt=reply.pk)
        .exclude(status=Turn.Status.FAILED)
        .exclude(author=Turn.Author.SYSTEM)
        .order_by("-id")
        .values_list("author", "text")[: settings.CHAT_HISTORY_TURNS]
    )
    history.reverse()
    messages = [ChatMessage("system", settings.SYSTEM_PROMPT.format(company=settings.COMPANY_NAME))]
    for author, text in history:
        if text:
            messages.append(
                ChatMessage("user" if author == Turn.Author.CUSTOMER else "assistant", text)
            )
    return ReplyRequest(
        messages=messages,
        model=settings.OPENAI_MODEL,
        temperature=settings.OPENAI_TEMPERATURE,
        max_tokens=settings.OPENAI_MAX_TOKENS,
    )


class ReplyBusy(Exception):
    """Another worker holds this reply's lease; look again after `retry_in` seconds."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(retry_in)
        self.retry_in = retry_in


def write_reply(reply_id: int) -> None:
    """Generate, stream and store one bot reply. Safe to call twice for the same reply."""
    reply = Turn.claim_reply(reply_id, settings.REPLY_LEASE_S)
    if reply is None:
        current = Turn.objects.filter(pk=reply_id).only("status", "claimed_at").first()
        if current is not None and current.status == Turn.Status.STREAMING and current.claimed_at:
            held_for = time.time() - current.claimed_at.timestamp()
            raise ReplyBusy(max(1.0, settings.REPLY_LEASE_S - held_for))
        logger.info("reply %s is already taken care of; nothing to do", reply_id)
        return
    try:
        ReplyWriter(reply).run()
    finally:
        # A worker runs many threads: none may keep an idle connection between replies.
        _release_database_connection()


@dataclass
class _Attempt:
    text: list[str] = field(default_factory=list)
    finished: Finished | None = None
    first_token_at: float | None = None


class ReplyWriter:
    """Streams a claimed reply to the customer; the one layer that retries provider errors.

    Tokens are coalesced into frames about every REPLY_FLUSH_INTERVAL_S, except the first,
    which goes out at once so the customer sees the reply start as early as possible.
    """

    def __init__(self, reply: Turn) -> None:
        self.reply = reply
        self.provider_name = llm.provider_name()
        self.publisher = ReplyPublisher(reply)
        self.deadline = time.monotonic() + settings.REPLY_DEADLINE_S
        asked_at = reply.reply_to.created_at if reply.reply_to else reply.created_at
        self.asked_at = asked_at.timestamp()

    def run(self) -> None:
        provider = llm.get_provider()
        request = build_request(self.reply)
        _release_database_connection()
        self.publisher.start()
        error: ProviderError | None = None
        for attempt_number in range(1, settings.REPLY_MAX_ATTEMPTS + 1):
            attempt = _Attempt()
            try:
                self._stream(provider, request, attempt)
            except ProviderError as exc:
                error = exc
                delay = (
                    exc.retry_after if exc.retry_after is not None else 2 ** (attempt_number - 1)
                )
                out_of_time = time.monotonic() + delay > self.deadline
                if exc.permanent or attempt_number == settings.REPLY_MAX_ATTEMPTS or out_of_time:
                    break
                logger.warning(
                    "reply %s: %s (%s); retrying in %.1fs",
                    self.reply.pk,
                    exc.code,
                    exc,
                    delay,
                )
                time.sleep(delay)
                if attempt.text:
                    self.publisher.start()  # the customer saw a partial text: start it over
                continue
            self._succeed(attempt)
            return
        self.fail(error)

    def _stream(self, provider: Provider, request: ReplyRequest, attempt: _Attempt) -> None:
        pending: list[str] = []
        last_flush = 0.0
        for event in provider.stream(request):
            now = time.monotonic()
            if now > self.deadline:
                raise ProviderError("reply deadline passed", permanent=True, code="timeout")
            if isinstance(event, TextDelta):
                if not event.text:
                    continue
                if attempt.first_token_at is None:
                    attempt.first_token_at = time.time()
                attempt.text.append(event.text)
                pending.append(event.text)
                if now - last_flush >= settings.REPLY_FLUSH_INTERVAL_S:
                    self.publisher.delta("".join(pending))
                    pending.clear()
                    last_flush = now
            else:
                attempt.finished = event
        if pending:
            self.publisher.delta("".join(pending))
        if attempt.finished is None:
            raise ProviderError("the stream ended without a finish", code="stream_interrupted")

    def _succeed(self, attempt: _Attempt) -> None:
        finished = attempt.finished
        assert finished is not None
        stored = self.reply.finish_reply(
            status=Turn.Status.DONE,
            text="".join(attempt.text),
            provider=self.provider_name,
            model=finished.model,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            sources=[source.as_dict() for source in finished.sources],
            abstained=finished.abstained,
            first_token_ms=self._ms_since_asked(attempt.first_token_at),
            duration_ms=self._ms_since_asked(time.time()),
        )
        if stored:
            self.publisher.done(self.reply)
        else:
            logger.warning("reply %s was taken over by another worker; dropping", self.reply.pk)

    def fail(self, error: ProviderError | None) -> None:
        code = error.code if error else "provider_error"
        logger.error("reply %s failed: %s (%s)", self.reply.pk, code, error)
        stored = self.reply.finish_reply(
            status=Turn.Status.FAILED,
            text=APOLOGY,
            provider=self.provider_name,
            error_code=code,
            duration_ms=self._ms_since_asked(time.time()),
        )
        if stored:
            self.publisher.done(self.reply, error={"code": code, "message": APOLOGY})

    def _ms_since_asked(self, at: float | None) -> int | None:
        return None if at is None else max(0, round((at - self.asked_at) * 1000))


def _release_database_connection() -> None:
    """Hand the connection back while the reply streams for seconds: a worker has many
    threads, and each holding a connection throughout would exhaust the database's limit.
    The next query reconnects (never mid-transaction)."""
    if not connection.in_atomic_block:
        connection.close()


def fail_reply_after_crash(reply_id: int, code: str = "internal_error") -> None:
    """Last resort when writing a reply raised something unexpected: apologise, never go silent."""
    reply = (
        Turn.objects.select_related("reply_to")
        .filter(pk=reply_id, status=Turn.Status.STREAMING)
        .first()
    )
    if reply is not None:
        ReplyWriter(reply).fail(ProviderError("unexpected error", permanent=True, code=code))
