"""What happens when a customer writes: their visitor identity, their conversations, and a
message stored with the bot's reply queued.

Views, consumers and tasks stay thin and call one function here (reading goes through
selectors.py; the bot's reply is written by replies.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from bot.wording import wording_for
from knowledge import search as knowledge_search
from support_bot import config_cache

from . import attachments, escalation, replies, selectors, state
from .context import StartContext
from .events import send_turn_on_commit
from .models import Conversation, Customer, Turn
from .tasks import generate_reply

Status = Conversation.Status


# --- Customers and conversations -------------------------------------------------------------


# A visitor's next conversation has an id before it has a row: derived from the visitor's id
# and how many conversations they have, so a page and its socket agree on it without storing
# anything. Rows are written with the first frame that needs them (a message, "talk to a
# person", an email address): opening the chat page stores nothing.
_PENDING_NAMESPACE = uuid.UUID("6f1d2a8e-4b7c-4f0e-9a51-3c2d7e8b9f10")


def pending_conversation_id(customer_id: uuid.UUID, conversations_before: int) -> uuid.UUID:
    return uuid.uuid5(_PENDING_NAMESPACE, f"{customer_id}:{conversations_before}")


def new_visitor_id() -> uuid.UUID:
    """The id a visitor's cookie carries from their first page; their row comes later."""
    return uuid.uuid4()


def page_conversation_id(customer_id: uuid.UUID) -> uuid.UUID:
    """The conversation the chat page opens: the visitor's latest one that is not resolved, or
    the next one, not stored yet."""
    latest = (
        Conversation.objects.filter(customer_id=customer_id)
        .exclude(status=Conversation.Status.RESOLVED)
        .order_by("-created_at")
        .values_list("pk", flat=True)
        .first()
    )
    return latest or _next_conversation_id(customer_id)


def _next_conversation_id(customer_id: uuid.UUID) -> uuid.UUID:
    count = Conversation.objects.filter(customer_id=customer_id).count()
    return pending_conversation_id(customer_id, count)


def open_conversation(customer_id: uuid.UUID, conversation_id: str) -> Conversation:
    """The customer's conversation with this id for their page or socket: stored, or their
    next one, unsaved (`is_pending`). Raises selectors.ConversationNotFound or
    selectors.NotYourConversation otherwise."""
    try:
        return selectors.conversation_for_customer(customer_id, conversation_id)
    except selectors.ConversationNotFound:
        if str(_next_conversation_id(customer_id)) != str(conversation_id):
            raise
    return Conversation(pk=uuid.UUID(str(conversation_id)), customer_id=customer_id)


def is_pending(conversation: Conversation) -> bool:
    return conversation._state.adding


def store_conversation(
    conversation: Conversation, started: StartContext | None = None
) -> Conversation:
    """The pending conversation's rows (the customer's too, the first time), once something
    in it is worth storing, with where it `started` (context.py). Two sockets doing it at once
    store it once."""
    if not is_pending(conversation):
        return conversation
    with transaction.atomic():
        customer, _ = Customer.objects.get_or_create(pk=conversation.customer_id)
        stored, _ = Conversation.objects.get_or_create(
            pk=conversation.pk,
            defaults={"customer": customer, **(started or StartContext()).fields()},
        )
    if stored.customer_id != conversation.customer_id:  # a uuid5 clash: never in practice
        raise selectors.NotYourConversation(str(conversation.pk))
    return stored


def start_new_conversation(customer_id: uuid.UUID) -> uuid.UUID:
    """The id of a fresh conversation for the customer: their newest empty one while there is
    one (pressing "New conversation" again and again makes no pile of tickets), else the next
    one, stored with its first message."""
    empty = (
        Conversation.objects.filter(customer_id=customer_id, status=Status.OPEN)
        .filter(turns__isnull=True)
        .order_by("-created_at")
        .values_list("pk", flat=True)
        .first()
    )
    return empty or _next_conversation_id(customer_id)


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


@config_cache.unit_of_work()
def post_customer_message(
    conversation: Conversation,
    client_id: str,
    text: str,
    *,
    admit: Callable[[], None] | None = None,
    files: Sequence[attachments.CheckedFile] = (),
) -> PostedMessage:
    """Store a customer's message and queue the bot's reply, once per client message id.

    A message already stored (the page re-sends what it saw no ack for) is acknowledged again.
    The INSERT itself finds out, by the unique client id: re-sends are rare, so no message
    pays a read first. `admit` (an upload's rate limit) is called once the message is known to
    be new, inside its transaction, and may raise to refuse it: then nothing is stored.

    The bot replies only while it answers the conversation (no person asked for). A message
    that matches an escalation rule (escalation.escalation_for_message), or says yes to the
    bot's offer of a person (escalation.accepts_offered_person), is stored as always, then
    hands the conversation to a person instead of queueing a reply. Writing to a resolved
    conversation reopens it; writing to a snoozed one brings it back to the team.

    `files` (checked by attachments.validate) are stored with the turn, or not at all. A
    message of files alone gets no bot reply: the bot can't read them, so while it answers a
    notice in the customer's language asks what they need (bot.wording's `files_received`;
    docs/attachments.md).

    Returns only after the commit, so an acknowledgement built from the result never
    acknowledges a message that could still be lost. One unit of work for the configuration
    cache: the escalation rules and business hours it reads share one Redis GET.
    """
    with _messages_being_stored() as alone:
        if alone and conversation.bot_answers and text:
            # Before the transaction: an idle worker embeds the question while it is stored
            # (the socket's copy of the conversation may be old: at worst a question is
            # embedded unused). Not in a burst: the workers' CPU is better left to storing it.
            knowledge_search.ask_ahead(text)
        return _store_customer_message(conversation, client_id, text, admit, files)


_storing_lock = threading.Lock()
_storing = 0  # customers' messages this process is storing now


@contextmanager
def _messages_being_stored() -> Iterator[bool]:
    """Around storing one message: yields whether it is the only one this process is storing."""
    global _storing
    with _storing_lock:
        _storing += 1
        alone = _storing == 1
    try:
        yield alone
    finally:
        with _storing_lock:
            _storing -= 1


def _store_customer_message(
    conversation: Conversation,
    client_id: str,
    text: str,
    admit: Callable[[], None] | None,
    files: Sequence[attachments.CheckedFile],
) -> PostedMessage:
    saved_files: list[str] = []
    try:
        with transaction.atomic():
            turn = Turn.objects.create(
                conversation=conversation,
                author=Turn.Author.CUSTOMER,
                text=text,
                client_message_id=client_id,
            )
            if admit is not None:
                admit()
            attachments.store(turn, files, saved_files)
            status_changed = _customer_wrote(conversation)
            reply = None
            reason = escalation.escalation_for_message(conversation, text)
            language = None
            if reason is None:
                # A yes to the bot's offer of a person: handed over as "Talk to a person" is.
                yes = escalation.accepts_offered_person(conversation, turn)
                if yes is not None:
                    reason, language = Conversation.Escalation.CUSTOMER_REQUEST, yes.language
            escalated = reason is not None and escalation.escalate(
                conversation, reason, language=language
            )
            send_turn_on_commit(turn)
            if conversation.bot_answers and not text:  # files alone: nothing to answer
                notice = wording_for(selectors.customer_language(conversation.pk)).files_received
                send_turn_on_commit(
                    Turn.objects.create(
                        conversation=conversation, author=Turn.Author.SYSTEM, text=notice
                    )
                )
            elif conversation.bot_answers:
                reply = Turn.objects.create(
                    conversation=conversation,
                    author=Turn.Author.BOT,
                    status=Turn.Status.QUEUED,
                    reply_to=turn,
                )
            if reply is not None:
                _queue_reply_on_commit(reply)
            if escalated:
                pass  # escalate() has announced it
            elif status_changed:
                state.conversation_changed(conversation.pk)
            else:
                state.notify_team(conversation.pk)
    except IntegrityError:
        attachments.discard(saved_files)
        # Stored before: a re-send, or the same client id raced in on another socket.
        existing = posted_before(conversation, client_id)
        if existing is None:
            raise
        return existing
    except BaseException:
        attachments.discard(saved_files)  # no file without its committed turn
        raise
    return PostedMessage(turn=turn, reply=reply, duplicate=False)


_STATUS_WHEN_CUSTOMER_WRITES: dict[str, str] = {
    Conversation.Status.RESOLVED: Conversation.Status.OPEN,
    Conversation.Status.SNOOZED: Conversation.Status.PENDING,
}


def _customer_wrote(conversation: Conversation) -> bool:
    """The customer wrote: one UPDATE of the row, locked and read first, since the caller's
    copy may be old (a socket keeps it from its connect). A resolved conversation reopens for
    the bot (unassigned); a snoozed one goes back to the team. Returns whether the status
    changed."""
    status: str = (
        Conversation.objects.select_for_update()
        .values_list("status", flat=True)
        .get(pk=conversation.pk)
    )
    new_status = _STATUS_WHEN_CUSTOMER_WRITES.get(status, status)
    now = timezone.now()
    updates: dict[str, Any] = {
        "last_message_at": now,
        "last_customer_message_at": now,
        "updated_at": now,
        "status": new_status,
    }
    if status == Conversation.Status.SNOOZED:
        updates["snoozed_until"] = None
    if status == Conversation.Status.RESOLVED:
        # A new question after a resolution goes to the bot first, not to whoever resolved
        # the last one (they may be off shift); the bot hands over again if it must.
        updates["assignee"] = None
    Conversation.objects.filter(pk=conversation.pk).update(**updates)
    for name, value in updates.items():
        setattr(conversation, name, value)
    return new_status != status


def posted_before(conversation: Conversation, client_id: str) -> PostedMessage | None:
    """The customer's message stored under this client id, acknowledged again as a duplicate.
    Its reply is queued again while still queued: if the first try died between its commit and
    queueing the reply, nothing else would ever queue it, and an extra task for a queued reply
    is harmless (a reply is claimed only once)."""
    turn = (
        Turn.objects.filter(conversation=conversation, client_message_id=client_id)
        .select_related("reply")
        .first()
    )
    if turn is None:
        return None
    reply = getattr(turn, "reply", None)
    if reply is not None and reply.status == Turn.Status.QUEUED:
        reply.reply_to = turn
        _queue_reply_on_commit(reply)
    return PostedMessage(turn=turn, reply=reply, duplicate=True)


def _queue_reply_on_commit(reply: Turn) -> None:
    # The customer's place in the model's queue before the task, which a worker may run at
    # once. robust: with the broker down the message is still stored and acknowledged; the
    # sweeper in the workers queues its reply (recovery.py).
    transaction.on_commit(lambda: replies.hold_place_in_line(reply), robust=True)
    transaction.on_commit(lambda: generate_reply.delay(reply.pk), robust=True)
