"""Workflows across models: what happens when a customer writes and when the bot replies.

Views, consumers and tasks stay thin and call one function here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from knowledge import retrieval
from studio import runtime
from studio import services as studio_services
from support_bot import config_cache

from . import grounding, handoff, llm
from .events import ReplyPublisher, send_turn_on_commit
from .llm.base import (
    ChatMessage,
    Finished,
    Provider,
    ProviderError,
    ReplyRequest,
    Source,
    StreamEvent,
    TextDelta,
    close_stream,
)
from .models import Conversation, Customer, Turn

if TYPE_CHECKING:
    from studio.models import PromptVersion

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


def known_customer(customer_id: uuid.UUID | None) -> Customer | None:
    """The visitor's Customer, or None: for requests that must not create one."""
    if customer_id is None:
        return None
    return Customer.objects.filter(pk=customer_id).first()


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
        conversation = Conversation.objects.select_related("assignee").get(
            pk=uuid.UUID(str(conversation_id))
        )
    except (ValueError, Conversation.DoesNotExist):
        raise ConversationNotFound(conversation_id) from None
    if conversation.customer_id != customer_id:
        raise NotYourConversation(conversation_id)
    return conversation


def conversation_snapshot(
    conversation: Conversation, limit: int = 200, *, shown_only: bool = False
) -> dict[str, Any]:
    """The frame a socket receives on connect: status, the state the page shows around the
    transcript (handoff.customer_state, as in `conversation.state` frames) and the latest
    turns, oldest first. The customer's page gets withdrawn replies too (a page that missed
    their reply.done still shows the "queued" placeholder it made from the ack, and hides it
    when the snapshot says withdrawn); `shown_only` leaves them out (the agent's view)."""
    queryset = Turn.objects.filter(conversation=conversation).select_related("agent")
    if shown_only:
        queryset = queryset.shown()
    turns = list(queryset.order_by("-id")[:limit])
    turns.reverse()
    state = handoff.customer_state(conversation)
    del state["type"]
    return {
        "type": "conversation",
        "id": str(conversation.pk),
        "status": conversation.status,
        "state": state,
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


@config_cache.unit_of_work()
def post_customer_message(conversation: Conversation, client_id: str, text: str) -> PostedMessage:
    """Store a customer's message and queue the bot's reply, once per client message id.

    The bot replies only while it answers the conversation (no person asked for). A message
    that matches an escalation rule (handoff.escalation_for_message) is stored as always, then
    hands the conversation to a person instead of queueing a reply. Writing to a resolved
    conversation reopens it; writing to a snoozed one brings it back to the team.

    Returns only after the commit, so an acknowledgement built from the result never
    acknowledges a message that could still be lost. One unit of work for the configuration
    cache: the escalation rules and business hours it reads share one Redis GET.
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
            status_changed = _customer_wrote(conversation)
            reply = None
            reason = handoff.escalation_for_message(conversation, text)
            escalated = reason is not None and handoff.escalate(conversation, reason)
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
            if escalated:
                pass  # escalate() has announced it
            elif status_changed:
                handoff.conversation_changed(conversation.pk)
            else:
                handoff.notify_inbox(conversation.pk)
    except IntegrityError:
        # The same client id raced in on another socket; that one won.
        existing = _already_posted(conversation, client_id)
        if existing is None:
            raise
        return existing
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


def build_request(reply: Turn, bot: runtime.BotConfig | None = None) -> ReplyRequest:
    """The reply's prompt: the version's system prompt, rendered, plus the latest turns before
    this reply within its history budget (older ones summarised in one line; one bounded
    query), grounded in the knowledge base within its knowledge budget (grounding.py)."""
    bot = bot or runtime.default_config()
    history = list(
        Turn.objects.filter(conversation_id=reply.conversation_id, id__lt=reply.pk)
        .dialogue()
        .order_by("-id")
        .values_list("author", "text")[: runtime.history_scan_limit()]
    )
    history.reverse()
    turns: list[ChatMessage] = []
    for author, text in history:
        if not text:
            continue
        if author == Turn.Author.CUSTOMER:
            turns.append(ChatMessage("user", text))
        else:
            turns.append(ChatMessage("assistant", grounding.strip_citations(text)))
    kept, summary = runtime.fit_history(turns, bot.history_tokens)
    latest = next((m.content for m in reversed(turns) if m.role == "user"), "")
    customer_name = ""
    if runtime.uses_variable(bot.system_prompt, "customer_name"):
        customer_name = (
            Customer.objects.filter(conversations__pk=reply.conversation_id)
            .values_list("display_name", flat=True)
            .first()
            or ""
        )
    system = _system_message(bot, latest, customer_name)
    if summary:
        system = ChatMessage("system", f"{system.content}\n\n{summary}")
    return grounded_request([system, *kept], bot)


def _system_message(
    bot: runtime.BotConfig | None = None, latest: str = "", customer_name: str = ""
) -> ChatMessage:
    bot = bot or runtime.default_config()
    language = runtime.guess_language(latest) if latest else runtime.UNKNOWN_LANGUAGE
    return ChatMessage(
        "system",
        runtime.render_system_prompt(
            bot.system_prompt, language=language, customer_name=customer_name
        ),
    )


def grounded_request(
    messages: list[ChatMessage], bot: runtime.BotConfig | None = None
) -> ReplyRequest:
    """A request for these messages with what the knowledge base has for the latest one: the
    passages the answer may use go into the system prompt, and the request carries them for
    the provider and for mapping citations back to articles. `bot`: the prompt version's
    settings (model, sampling, budgets); default: today's settings."""
    bot = bot or runtime.default_config()
    knowledge = grounding.ground(messages, budget=bot.knowledge_tokens)
    return ReplyRequest(
        messages=grounding.with_knowledge(messages, knowledge),
        model=bot.request_model,
        temperature=bot.temperature,
        top_p=bot.top_p,
        max_tokens=bot.max_tokens,
        stop=list(bot.stop),
        knowledge=knowledge,
    )


def configured_provider(bot: runtime.BotConfig) -> Provider:
    """The provider a version names, or the configured one."""
    if bot.provider:
        return llm.get_named_provider(bot.provider)
    return llm.get_provider()


def provider_for(request: ReplyRequest, configured: Provider) -> Provider:
    """The configured provider, unless the knowledge base has nothing good enough: then the
    reply says so without asking any model. A model that replies that the passages don't
    answer the question abstains the same way (grounding.AbstainOnMarker)."""
    if request.knowledge is not None and request.knowledge.abstain:
        return grounding.AbstainReply()
    return grounding.AbstainOnMarker(configured)


def reply_sources(finished: Finished, text: str, request: ReplyRequest) -> list[Source]:
    """The sources of a finished reply: those its provider named, or else the passages its
    text cites by number (a model names its sources only that way). An abstention has none."""
    knowledge = request.knowledge
    if finished.abstained:
        return []
    if finished.sources or knowledge is None or not knowledge.passages:
        return finished.sources
    return grounding.cited_sources(text, knowledge.passages)


def answer_question(
    question: str, version: PromptVersion | None = None, provider: Provider | None = None
) -> Finished:
    """The bot's answer to a conversation of one message, grounded and abstaining as a reply
    would be, without streaming or storing it (for evaluations such as manage.py eval_kb).
    `version`: the prompt version to answer with (default: the active one, else the built-in
    settings); `provider`: the provider to ask instead of the version's (default: the one a
    reply would ask). Not retried: a ProviderError is raised as it comes."""
    bot = runtime.config_for(version if version is not None else studio_services.active_version())
    request = grounded_request([_system_message(bot, question), ChatMessage("user", question)], bot)
    text: list[str] = []
    finished: Finished | None = None
    configured = provider or configured_provider(bot)
    for event in provider_for(request, configured).stream(request):
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            finished = event
    if finished is None:
        raise ProviderError("the stream ended without a finish", code="stream_interrupted")
    return dataclasses.replace(finished, sources=reply_sources(finished, "".join(text), request))


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
        if not reply.conversation.bot_answers:
            _withdraw(reply)
            return
        ReplyWriter(reply).run()
    finally:
        # A worker runs many threads: none may keep an idle connection between replies.
        _release_database_connection()


def _withdraw(reply: Turn) -> None:
    """The conversation went to a person (asked for, taken over, assigned, snoozed or
    resolved) after this reply was queued and before a worker claimed it: the bot does not
    answer. Nothing is grounded and no provider is asked; the reply ends empty, as withdrawn,
    and the page is told so it stops waiting (it never got a reply.start)."""
    if reply.finish_reply(status=Turn.Status.WITHDRAWN, text=""):
        ReplyPublisher(reply).done(reply)
        logger.info(
            "reply %s withdrawn: conversation %s is no longer the bot's (%s)",
            reply.pk,
            reply.conversation_id,
            reply.conversation.status,
        )


@dataclass
class _Attempt:
    text: list[str] = field(default_factory=list)
    finished: Finished | None = None
    first_token_at: float | None = None


class _TakenOver(Exception):
    """The conversation went to a person while the reply was streaming."""


class ReplyWriter:
    """Streams a claimed reply to the customer; the one layer that retries provider errors.

    The request is grounded once (grounding.py), before the retries: when the knowledge base
    has nothing good enough the reply abstains without asking the provider, a model that
    replies grounding.NO_ANSWER_MARKER abstains the same way, and a model's [n] citations
    become the reply's sources. Tokens are coalesced into frames about every
    REPLY_FLUSH_INTERVAL_S, except the first, which goes out at once so the customer sees the
    reply start as early as possible. Every frame sent also reads whether a person has the
    conversation now (events.person_has_it_key, in the same Redis round trip), and the reply
    stops when one does.
    """

    def __init__(self, reply: Turn) -> None:
        self.reply = reply
        self.provider_name = llm.provider_name()
        # The prompt version this reply uses (resolved in run(); None for the built-in default).
        self.bot: runtime.BotConfig | None = None
        self.publisher = ReplyPublisher(reply)
        self.deadline = time.monotonic() + settings.REPLY_DEADLINE_S
        asked_at = reply.reply_to.created_at if reply.reply_to else reply.created_at
        self.asked_at = asked_at.timestamp()

    def run(self) -> None:
        # Built before the reply starts: the first build in a process takes a while, and the
        # customer should see the reply start only once it is about to be asked for.
        # The version is read once a reply, so an activation takes effect from the next turn.
        self.bot = runtime.config_for_conversation(self.reply.conversation_id)
        if self.bot.provider:
            self.provider_name = self.bot.provider
        configured = configured_provider(self.bot)
        if self.reply.reply_to is not None:
            _release_database_connection()
            retrieval.warm_question(self.reply.reply_to.text)
        request: ReplyRequest | None = None
        started = False
        error: ProviderError | None = None
        for attempt_number in range(1, settings.REPLY_MAX_ATTEMPTS + 1):
            attempt = _Attempt()
            try:
                if request is None:
                    # History and knowledge are read once a reply, not once an attempt (again
                    # only if the knowledge base could not be read).
                    request = build_request(self.reply, self.bot)
                    _release_database_connection()
                if not started:
                    self.publisher.start()
                    started = True
                self._stream(provider_for(request, configured), request, attempt)
            except _TakenOver:
                self._stop_for_a_person(attempt)
                return
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
                _release_database_connection()  # a failed knowledge read may have held it
                time.sleep(delay)
                if attempt.text:
                    self.publisher.start()  # the customer saw a partial text: start it over
                continue
            self._succeed(attempt, request)
            return
        self.fail(error)

    def _stream(self, provider: Provider, request: ReplyRequest, attempt: _Attempt) -> None:
        pending: list[str] = []
        last_flush = 0.0
        events = provider.stream(request)
        try:
            for event in events:
                now = time.monotonic()
                if now > self.deadline:
                    raise ProviderError("reply deadline passed", permanent=True, code="timeout")
                self._take(event, attempt, pending)
                if pending and now - last_flush >= settings.REPLY_FLUSH_INTERVAL_S:
                    still_the_bots = self.publisher.delta("".join(pending))
                    pending.clear()
                    last_flush = now
                    if not still_the_bots:
                        raise _TakenOver
        finally:
            close_stream(events)  # a stop or an error
        if pending:
            self.publisher.delta("".join(pending))
        if attempt.finished is None:
            raise ProviderError("the stream ended without a finish", code="stream_interrupted")

    @staticmethod
    def _take(event: StreamEvent, attempt: _Attempt, pending: list[str]) -> None:
        if not isinstance(event, TextDelta):
            attempt.finished = event
        elif event.text:
            if attempt.first_token_at is None:
                attempt.first_token_at = time.time()
            attempt.text.append(event.text)
            pending.append(event.text)

    def _stop_for_a_person(self, attempt: _Attempt) -> None:
        """A person took the conversation while the bot was answering: the bot stops. What the
        customer already saw stays, stored as the reply (taken_over), so nothing shown is lost;
        no sources are claimed for half an answer, and the abstain streak isn't counted."""
        stored = self._finish(
            Turn.Status.DONE,
            text="".join(attempt.text),
            error_code="taken_over",
            first_token_ms=self._ms_since_asked(attempt.first_token_at),
        )
        if stored:
            self.publisher.done(self.reply)
            logger.info("reply %s stopped: a person has the conversation", self.reply.pk)

    def _succeed(self, attempt: _Attempt, request: ReplyRequest) -> None:
        finished = attempt.finished
        assert finished is not None
        text = "".join(attempt.text)
        sources = reply_sources(finished, text, request)
        offered = len(request.knowledge.passages) if request.knowledge is not None else 0
        if offered and finished.abstained:
            # A near miss retrieval let through, or a passage the model misread: worth a look.
            logger.info(
                "reply %s: the model found no answer in the %d passages it was given",
                self.reply.pk,
                offered,
            )
        elif offered and not sources:
            # An answer from elsewhere, or an "I couldn't find it" in the model's own words:
            # worth a look.
            logger.info(
                "reply %s cites none of the %d passages it was given", self.reply.pk, offered
            )
        stored = self._finish(
            Turn.Status.DONE,
            text=text,
            model=finished.model,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            sources=[source.as_dict() for source in sources],
            abstained=finished.abstained,
            cost=runtime.cost_of(
                finished.model, finished.prompt_tokens, finished.completion_tokens
            ),
            first_token_ms=self._ms_since_asked(attempt.first_token_at),
        )
        if stored:
            self.publisher.done(self.reply)
            handoff.after_bot_reply(self.reply)
        else:
            logger.warning("reply %s was taken over by another worker; dropping", self.reply.pk)

    def fail(self, error: ProviderError | None) -> None:
        code = error.code if error else "provider_error"
        logger.error("reply %s failed: %s (%s)", self.reply.pk, code, error)
        stored = self._finish(Turn.Status.FAILED, text=APOLOGY, error_code=code)
        if stored:
            self.publisher.done(self.reply, error={"code": code, "message": APOLOGY})

    def _finish(self, status: str, **fields: Any) -> bool:
        """Store the reply's outcome with what every outcome records: the provider, the prompt
        version and how long it took from the customer's message."""
        return self.reply.finish_reply(
            status=status,
            provider=self.provider_name,
            prompt_version=self.bot.version if self.bot else None,
            duration_ms=self._ms_since_asked(time.time()),
            **fields,
        )

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
