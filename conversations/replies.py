"""The bot replies: a queued reply claimed by one worker (the reply lease and its fencing
counter), composed and streamed by the bot (bot/), stored once, and announced frame by frame
(events.ReplyPublisher). The one layer that retries provider errors.

Tasks stay thin and call write_reply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from bot import config as bot_config
from bot import run
from bot.config import BotConfig
from bot.prompt import build_request, uses_variable
from bot.providers import registry
from bot.providers.base import Provider
from bot.run import Answer, Stopped
from bot.types import (
    BudgetWait,
    ChatMessage,
    PlaceInLine,
    ProviderError,
    ReplyRequest,
)
from bot.wording import customer_language, wording_for
from knowledge import search as knowledge_search
from support_bot import metrics

from . import escalation, recovery, selectors
from .events import ReplyPublisher
from .models import Turn

logger = logging.getLogger(__name__)


def request_for_conversation(
    bot: BotConfig,
    conversation_id: uuid.UUID | str | None,
    messages: Sequence[ChatMessage],
    provider: Provider | None = None,
) -> ReplyRequest:
    """The request the bot sends for these messages of a conversation (bot/prompt.py), with
    its customer's name when the prompt uses it, for `provider` to answer (default: the
    configuration's). Replies, the playground and agent assist all build their request here,
    so each shows what a reply would send."""
    name = ""
    if conversation_id is not None and uses_variable(bot.system_prompt, "customer_name"):
        name = selectors.customer_name(conversation_id)
    return build_request(bot, messages, customer_name=name, provider=provider)


def request_for_reply(
    reply: Turn, bot: BotConfig, provider: Provider | None = None
) -> ReplyRequest:
    """The reply's request: the conversation up to the customer's message it answers."""
    messages = selectors.dialogue(reply.conversation_id, before=reply.pk)
    return request_for_conversation(bot, reply.conversation_id, messages, provider)


def asked_at(reply: Turn) -> float:
    """When the customer asked what the reply answers (time.time())."""
    return (reply.reply_to.created_at if reply.reply_to else reply.created_at).timestamp()


def place_in_line(reply: Turn, bot: BotConfig) -> PlaceInLine:
    """The reply's customer's place in the queue for the model's budget: by when they asked."""
    return PlaceInLine(
        ticket=f"reply:{reply.pk}",
        asked_at=asked_at(reply),
        model=bot.request_model,
        limits=bot.model_limits,
    )


def _line_of(reply: Turn) -> tuple[Provider, PlaceInLine]:
    """The provider whose queue the reply's customer stands in, and their place in it."""
    bot = bot_config.for_conversation(reply.conversation_id)
    return registry.for_config(bot), place_in_line(reply, bot)


def hold_place_in_line(reply: Turn) -> None:
    """Take the customer's place in that queue as soon as their message is stored, before any
    worker has the reply: in a burst, workers take replies in no strict order (two workers,
    free threads, connections from the pool), and customers taken sooner would go first. The
    worker that takes the reply renews the place, and leaves the line when it is done."""
    provider, place = _line_of(reply)
    provider.hold_place(place)


def write_reply(reply_id: int) -> None:
    """Generate, stream and store one bot reply. Safe to call twice for the same reply: a
    duplicate task finds it claimed (or finished) and does nothing; if the worker writing it
    dies, the sweeper re-queues it once its lease lapses (recovery.py)."""
    reply = Turn.claim_reply(reply_id, settings.REPLY_LEASE_S)
    if reply is None:
        logger.info("reply %s is already taken care of; nothing to do", reply_id)
        return
    try:
        with recovery.keeper.hold(reply) as held:
            if not reply.conversation.bot_answers:
                _withdraw(reply)
            elif reply.attempt > settings.REPLY_MAX_CLAIMS:
                # Every worker that took it died or hit an outage: apologise, don't loop.
                ReplyWriter(reply, held).fail(
                    ProviderError("too many attempts", permanent=True, code="gave_up")
                )
            else:
                with metrics.reply_in_flight():
                    ReplyWriter(reply, held).run()
                return
        _leave_line(reply)  # held since the message was stored; no request is made
    except (DatabaseError, RedisError):
        _release_claim(reply)
        raise
    finally:
        # A worker runs many threads: none may keep an idle connection between replies.
        _release_database_connection()


def _leave_line(reply: Turn) -> None:
    provider, place = _line_of(reply)
    provider.leave_line(place)


def _release_claim(reply: Turn) -> None:
    """After an outage stopped this reply: queued again, so the task's retry (or any
    worker) can claim it at once. When the database is what failed, the lease lapses instead."""
    mine = Turn.objects.filter(pk=reply.pk, attempt=reply.attempt, status=Turn.Status.STREAMING)
    with contextlib.suppress(DatabaseError):
        mine.update(status=Turn.Status.QUEUED)


def _withdraw(reply: Turn) -> None:
    """The conversation went to a person (asked for, taken over, assigned, snoozed or
    resolved) after this reply was queued and before a worker claimed it: the bot does not
    answer. Nothing is grounded and no provider is asked; the reply ends empty, as withdrawn,
    and the page is told so it stops waiting (it never got a reply.start)."""
    if reply.finish_reply(status=Turn.Status.WITHDRAWN, text=""):
        metrics.reply_finished(reply)
        ReplyPublisher(reply).done(reply)
        logger.info(
            "reply %s withdrawn: conversation %s is no longer the bot's (%s)",
            reply.pk,
            reply.conversation_id,
            reply.conversation.status,
        )


class ReplyWriter:
    """Streams a claimed reply to the customer; the one layer that retries provider errors.

    The request is built once (bot/prompt.py), before the retries: when the knowledge base
    has nothing good enough the reply abstains without asking the provider, a model that
    replies the no-answer marker abstains the same way, and a model's [n] citations become the
    reply's sources (bot/run.py). Every frame sent also reads whether a person has the
    conversation now (events.person_has_it_key, in the same Redis round trip), and the reply
    stops when one does.
    """

    def __init__(self, reply: Turn, held: recovery.HeldReply | None = None) -> None:
        self.reply = reply
        # This process's hold on the reply's lease: lost when another worker took it over.
        self.held = held or recovery.HeldReply(reply.pk, reply.attempt)
        self.provider_name = registry.provider_name()
        # The configuration this reply uses (resolved in run(); None until then).
        self.bot: BotConfig | None = None
        self.publisher = ReplyPublisher(reply)
        # The language the customer writes in, once the request knows it (for an apology).
        self.language: str | None = None
        self.shown = False  # whether the customer saw any of this attempt's text
        self.deadline = time.monotonic() + settings.REPLY_DEADLINE_S
        self.asked_at = asked_at(reply)

    def run(self) -> None:
        # The configuration is read once a reply, so an activation takes effect from the next
        # turn; the request is built before the reply starts: the first build in a process
        # takes a while, and the customer should see the reply start only once it is asked.
        self.bot = bot = bot_config.for_conversation(self.reply.conversation_id)
        configured = registry.for_config(bot)
        self.provider_name = configured.name
        # The customer's place in the model's queue (held since their message was stored) is
        # renewed until the request is ready, so a burst's earlier questions go first even
        # where their retrieval finishes last.
        place = place_in_line(self.reply, bot)
        with configured.in_line(place):
            self._write(bot, configured, place)

    def _write(self, bot: BotConfig, configured: Provider, place: PlaceInLine) -> None:
        if self.reply.reply_to is not None:
            _release_database_connection()
            knowledge_search.warm_question(self.reply.reply_to.text)
        request: ReplyRequest | None = None
        started = False
        error: ProviderError | None = None
        for attempt_number in range(1, settings.REPLY_MAX_ATTEMPTS + 1):
            if self.held.is_lost:
                logger.info("reply %s: handed over to another worker", self.reply.pk)
                return
            self.shown = False
            try:
                if request is None:
                    # History and knowledge are read once a reply, not once an attempt (again
                    # only if the knowledge base could not be read).
                    request = self._waiting_for_budget(
                        request_for_reply(self.reply, bot, configured), place
                    )
                    if request.knowledge is not None:
                        self.language = request.knowledge.language
                    _release_database_connection()
                if self.held.is_lost:  # found out while the request was prepared
                    logger.info("reply %s: handed over to another worker", self.reply.pk)
                    return
                if not started:
                    self.publisher.start()
                    started = True
                answer = run.answer(
                    request, configured, on_delta=self._send, deadline=self.deadline
                )
            except Stopped as stopped:
                if self.held.is_lost:
                    logger.info("reply %s: handed over to another worker", self.reply.pk)
                else:
                    self._stop_for_a_person(stopped)
                return
            except ProviderError as exc:
                if self.held.is_lost:  # e.g. while it waited for the model's budget
                    logger.info("reply %s: handed over to another worker", self.reply.pk)
                    return
                error = exc
                delay = retry_delay(exc, attempt_number)
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
                metrics.provider_retry(exc.code)
                _release_database_connection()  # a failed knowledge read may have held it
                time.sleep(delay)
                if self.shown:
                    self.publisher.start()  # the customer saw a partial text: start it over
                continue
            self._succeed(answer, request)
            return
        self.fail(error)

    def _waiting_for_budget(self, request: ReplyRequest, place: PlaceInLine) -> ReplyRequest:
        """How this reply waits for its turn in the model's budget (bot/providers/budget.py):
        within its deadline, told "one moment" once the customer has waited
        REPLY_WAIT_NOTICE_S since their message, and no longer once another worker has it."""
        since_asked = time.time() - self.asked_at
        wait = BudgetWait(
            deadline=self.deadline,
            notice_at=time.monotonic() + settings.REPLY_WAIT_NOTICE_S - since_asked,
            on_notice=self._tell_waiting,
            cancelled=lambda: self.held.is_lost,
            asked_at=self.asked_at,
            place=place.ticket,
        )
        return dataclasses.replace(request, budget_wait=wait)

    def _tell_waiting(self, seconds: float) -> None:
        language = self.language or (
            customer_language([self.reply.reply_to.text]) if self.reply.reply_to else None
        )
        self.publisher.waiting(wording_for(language).one_moment, seconds)
        logger.info("reply %s waits %.0fs for the model's budget", self.reply.pk, seconds)

    def _send(self, text: str) -> bool:
        """A piece of the reply to the customer; False once a person has the conversation, or
        once another worker writes the reply."""
        if self.held.is_lost:
            return False
        self.shown = True
        return self.publisher.delta(text)

    def _stop_for_a_person(self, stopped: Stopped) -> None:
        """A person took the conversation while the bot was answering: the bot stops. What the
        customer already saw stays, stored as the reply (taken_over), so nothing shown is lost;
        no sources are claimed for half an answer, and the abstain streak isn't counted."""
        stored = self._finish(
            Turn.Status.DONE,
            text=stopped.text,
            error_code="taken_over",
            first_token_ms=self._ms_since_asked(stopped.first_token_at),
        )
        if stored:
            self.publisher.done(self.reply)
            logger.info("reply %s stopped: a person has the conversation", self.reply.pk)

    def _succeed(self, answer: Answer, request: ReplyRequest) -> None:
        offered = len(request.knowledge.passages) if request.knowledge is not None else 0
        if offered and answer.abstained:
            # A near miss retrieval let through, or a passage the model misread: worth a look.
            logger.info(
                "reply %s: the model found no answer in the %d passages it was given",
                self.reply.pk,
                offered,
            )
        elif offered and not answer.sources:
            # An answer from elsewhere, or an "I couldn't find it" in the model's own words:
            # worth a look.
            logger.info(
                "reply %s cites none of the %d passages it was given", self.reply.pk, offered
            )
        stored = self._finish(
            Turn.Status.DONE,
            text=answer.text,
            model=answer.model,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            sources=[source.as_dict() for source in answer.sources],
            abstained=answer.abstained,
            cost=bot_config.cost_of(answer.model, answer.prompt_tokens, answer.completion_tokens),
            first_token_ms=self._ms_since_asked(answer.first_token_at),
        )
        if stored:
            self.publisher.done(self.reply)
            escalation.after_bot_reply(self.reply, self.language)
        else:
            logger.warning("reply %s was taken over by another worker; dropping", self.reply.pk)

    def fail(self, error: ProviderError | None) -> None:
        code = error.code if error else "provider_error"
        logger.error("reply %s failed: %s (%s)", self.reply.pk, code, error)
        apology = self._apology()
        stored = self._finish(Turn.Status.FAILED, text=apology, error_code=code)
        if stored:
            self.publisher.done(self.reply, error={"code": code, "message": apology})

    def _apology(self) -> str:
        """The apology in the customer's language: the request's, or (when none was built)
        that of the message this reply answers, read without the database, which may be what
        failed."""
        language = self.language
        if language is None and self.reply.reply_to is not None:
            language = customer_language([self.reply.reply_to.text])
        return wording_for(language).apology

    def _finish(self, status: str, **fields: Any) -> bool:
        """Store the reply's outcome with what every outcome records: the provider, the prompt
        version and how long it took from the customer's message."""
        stored = self.reply.finish_reply(
            status=status,
            provider=self.provider_name,
            prompt_version_id=self.bot.version_id if self.bot else None,
            duration_ms=self._ms_since_asked(time.time()),
            **fields,
        )
        if stored:
            metrics.reply_finished(self.reply)
        return stored

    def _ms_since_asked(self, at: float | None) -> int | None:
        return None if at is None else max(0, round((at - self.asked_at) * 1000))


def retry_delay(error: ProviderError, attempt_number: int) -> float:
    """Seconds before the next attempt: what the provider asked for, none after a stall (the
    customer has already waited the read timeout), else 1, 2, 4… seconds."""
    if error.retry_after is not None:
        return error.retry_after
    if error.code == "timeout":
        return 0.0
    return float(2 ** (attempt_number - 1))


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
