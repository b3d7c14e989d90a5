"""Handing a conversation to a person, and what the customer does around it.

- When the bot hands over by itself: escalation rules (EscalationRule rows, edited by
  operators) matched against each customer message, and the abstain streak checked after each
  finished bot reply.
- escalate(): OPEN → PENDING in one conditional UPDATE, plus a notice telling the customer a
  person will join (or, outside business hours, asking for an email address).
- The customer's side: the email address, the rating (once, after the conversation is
  resolved), starting a new conversation and listing earlier ones.

Every change is announced after commit: a `conversation.state` frame to the customer's sockets
(see customer_state) and the conversation's row to the agents' inbox. Call
conversation_changed() from anything else that changes a conversation (the agent side does).
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce, Left
from django.utils import timezone

from support_bot import config_cache

from . import events
from .models import BusinessHours, Conversation, Customer, EscalationRule, Turn, staff_name
from .protocol import Refused

Status = Conversation.Status
Reason = Conversation.Escalation

EMAIL_MAX_CHARS = 254
COMMENT_MAX_CHARS = 2000
PREVIEW_CHARS = 140
# "*" in a rule stands for up to this many words ("connect me * person").
WILDCARD_MAX_WORDS = 8

PERSON_WILL_JOIN = (
    "I've asked a person from our team to join. They'll reply here as soon as they can."
)
TEAM_AWAY = (
    "Our team is away right now and back {when}. Please leave your email address and we'll "
    "answer you by email, or here once we're back."
)
EMAIL_SAVED = "Thanks! We'll answer you at {email}."
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class HandoffError(Refused):
    """A customer request refused, with a code for programs and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


# --- Escalation rules -------------------------------------------------------------------------

# Checked in this order: a customer who angrily asks for a person asked for a person.
_REASON_BY_KIND = (
    (EscalationRule.Kind.HANDOFF_PHRASE, Reason.CUSTOMER_REQUEST),
    (EscalationRule.Kind.ANGRY, Reason.ANGRY),
    (EscalationRule.Kind.KEYWORD, Reason.KEYWORD),
)


def normalise(text: str) -> str:
    """Case- and accent-free text: "Über-Mitarbeiter" → "uber-mitarbeiter"."""
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def pattern_regex(pattern: str) -> str | None:
    """A rule's pattern as a regular expression over normalised text: its words in order on
    word boundaries, with any punctuation or spaces between them; a "*" word stands for up to
    WILDCARD_MAX_WORDS words, and "*" inside a word for any letters ("refund*")."""
    regex = ""
    gap = False
    for word in normalise(pattern).split():
        if word.strip("*") == "":
            gap = bool(regex)
            continue
        if regex:
            regex += rf"(?:\W+\w+){{0,{WILDCARD_MAX_WORDS}}}?\W+" if gap else r"\W+"
        regex += re.escape(word).replace(r"\*", r"\w*")
        gap = False
    return rf"(?<!\w){regex}(?!\w)" if regex else None


@functools.lru_cache(maxsize=8)
def _compile(rules: tuple[tuple[str, str], ...]) -> dict[str, re.Pattern[str]]:
    by_kind: dict[str, list[str]] = {}
    for kind, pattern in rules:
        regex = pattern_regex(pattern)
        if regex:
            by_kind.setdefault(kind, []).append(f"(?:{regex})")
    return {kind: re.compile("|".join(parts)) for kind, parts in by_kind.items()}


@dataclass(frozen=True)
class EscalationRules:
    """The enabled rules, ready to apply."""

    phrases: dict[str, re.Pattern[str]]  # one compiled expression per phrase kind
    abstain_streak: int | None  # the smallest enabled threshold; None: no such rule


@config_cache.cached
def escalation_rules() -> EscalationRules:
    """The enabled rules, read once per change in each process (support_bot.config_cache), so
    an operator's change applies to the next message everywhere; compiling is also cached by
    content, for when the cache can't be used."""
    rows = EscalationRule.objects.filter(enabled=True).order_by("id")
    phrases: list[tuple[str, str]] = []
    thresholds: list[int] = []
    for kind, pattern, threshold in rows.values_list("kind", "pattern", "threshold"):
        if kind == EscalationRule.Kind.ABSTAIN_STREAK:
            thresholds.append(threshold)
        elif pattern:
            phrases.append((kind, pattern))
    return EscalationRules(
        phrases=_compile(tuple(phrases)) if phrases else {},
        abstain_streak=min(thresholds) if thresholds else None,
    )


def phrase_rules() -> dict[str, re.Pattern[str]]:
    """The enabled phrase rules, one compiled expression per kind."""
    return escalation_rules().phrases


def escalation_for_message(conversation: Conversation, text: str) -> str | None:
    """Why this customer message hands the conversation to a person, or None. Only asked while
    the bot answers: a conversation with the team already is not escalated again."""
    if not conversation.bot_answers:
        return None
    rules = phrase_rules()
    if not rules:
        return None
    normal = normalise(text)
    for kind, reason in _REASON_BY_KIND:
        rule = rules.get(kind)
        if rule is not None and rule.search(normal):
            return str(reason)
    return None


def after_bot_reply(reply: Turn) -> bool:
    """After a bot reply is finished: when it is the Nth abstention in a row (the abstain
    streak rule), hand the conversation to a person. Returns whether it did."""
    if not reply.abstained:
        return False
    threshold = escalation_rules().abstain_streak
    if threshold is None:
        return False
    conversation = reply.conversation
    replies = Turn.objects.filter(
        conversation_id=reply.conversation_id,
        author=Turn.Author.BOT,
        status__in=(Turn.Status.DONE, Turn.Status.FAILED),
        id__lte=reply.pk,
    )
    if conversation.escalated_at is not None:
        # Handed back to the bot: the streak starts again.
        replies = replies.filter(created_at__gt=conversation.escalated_at)
    threshold = max(threshold, 1)
    streak = list(replies.order_by("-id").values_list("abstained", flat=True)[:threshold])
    if len(streak) < threshold or not all(streak):
        return False
    with transaction.atomic():
        return escalate(conversation, Reason.ABSTAINED)


# --- Escalating -------------------------------------------------------------------------------


def escalate(conversation: Conversation, reason: str) -> bool:
    """Hand the conversation to a person: OPEN → PENDING in one conditional UPDATE, so it
    happens once however many messages or sockets ask at the same moment. The customer is told
    a person will join, or asked for an email address outside business hours.

    A resolved conversation can also be escalated when the customer asks for a person.
    Returns False (and changes nothing) when the conversation is already with the team.
    Call it inside a transaction: the notice and the status change commit together.
    """
    allowed = [Status.OPEN]
    if reason == Reason.CUSTOMER_REQUEST:
        allowed.append(Status.RESOLVED)
    now = _now()
    changed = Conversation.objects.filter(pk=conversation.pk, status__in=allowed).update(
        status=Status.PENDING, escalated_at=now, escalation_reason=reason, updated_at=now
    )
    if not changed:
        return False
    conversation.status = Status.PENDING
    conversation.escalated_at = now
    conversation.escalation_reason = reason
    hours = availability(now)
    if hours.open_now:
        text = PERSON_WILL_JOIN
    else:
        when = describe_opening(hours.next_opening, now) if hours.next_opening else "soon"
        text = TEAM_AWAY.format(when=when)
    notice = Turn.objects.create(
        conversation_id=conversation.pk, author=Turn.Author.SYSTEM, text=text
    )
    events.send_turn_on_commit(notice)
    conversation_changed(conversation.pk)
    return True


@dataclass(frozen=True)
class PersonRequest:
    escalated: bool
    state: dict[str, Any]


def ask_for_person(conversation: Conversation) -> PersonRequest:
    """The customer pressed "Talk to a person". Asking again changes nothing."""
    with transaction.atomic():
        escalated = escalate(conversation, Reason.CUSTOMER_REQUEST)
    return PersonRequest(escalated=escalated, state=state_frame(conversation.pk) or {})


# --- Business hours ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Availability:
    open_now: bool
    # When the team is back (aware, in SUPPORT_TIME_ZONE); None while open.
    next_opening: datetime | None


def support_zone() -> ZoneInfo:
    return ZoneInfo(settings.SUPPORT_TIME_ZONE)


def availability(now: datetime | None = None) -> Availability:
    """Whether people answer now, by the BusinessHours rows (none at all: always)."""
    zone = support_zone()
    local = (now or _now()).astimezone(zone)
    periods = business_hours()
    if not periods:
        return Availability(open_now=True, next_opening=None)
    time_now = local.time().replace(tzinfo=None)
    if any(day == local.weekday() and opens <= time_now < closes for day, opens, closes in periods):
        return Availability(open_now=True, next_opening=None)
    for ahead in range(8):
        date = local.date() + timedelta(days=ahead)
        starts = sorted(
            datetime.combine(date, opens, tzinfo=zone)
            for day, opens, _ in periods
            if day == date.weekday()
        )
        for start in starts:
            if start > local:
                return Availability(open_now=False, next_opening=start)
    return Availability(open_now=False, next_opening=None)  # unreachable with any row


@config_cache.cached
def business_hours() -> tuple[tuple[int, time, time], ...]:
    """(weekday, opens, closes) of every opening period, read once per change in each process
    (support_bot.config_cache)."""
    return tuple(BusinessHours.objects.values_list("weekday", "opens", "closes"))


def describe_opening(opening: datetime, now: datetime) -> str:
    """ "today at 09:00", "tomorrow at 09:00", "on Monday at 09:00" (+ the time zone)."""
    zone = support_zone()
    opening, now = opening.astimezone(zone), now.astimezone(zone)
    days = (opening.date() - now.date()).days
    if days == 0:
        day = "today"
    elif days == 1:
        day = "tomorrow"
    elif days >= 7:
        day = f"next {WEEKDAYS[opening.weekday()]}"
    else:
        day = f"on {WEEKDAYS[opening.weekday()]}"
    return f"{day} at {opening:%H:%M} ({settings.SUPPORT_TIME_ZONE} time)"


# --- What the customer's page shows -----------------------------------------------------------


def customer_state(conversation: Conversation) -> dict[str, Any]:
    """The conversation as the customer's page shows it around the transcript: who answers,
    whether to ask for an email address or a rating. Sent on connect (in the snapshot) and as
    a `conversation.state` frame after every change."""
    status = conversation.status
    assignee = conversation.assignee if conversation.assignee_id else None
    waiting = status == Status.PENDING and assignee is None
    return {
        "type": "conversation.state",
        "status": status,
        "assignee_name": staff_name(assignee),
        "escalation_reason": conversation.escalation_reason or None,
        "needs_email": waiting and not conversation.contact_email and not availability().open_now,
        "rating_requested": status == Status.RESOLVED and conversation.rated_at is None,
        "rated": conversation.rated_at is not None,
    }


def state_frame(conversation_id: uuid.UUID | str) -> dict[str, Any] | None:
    conversation = (
        Conversation.objects.select_related("assignee").filter(pk=conversation_id).first()
    )
    return customer_state(conversation) if conversation else None


def conversation_changed(conversation_id: uuid.UUID | str) -> None:
    """After commit: the customer's sockets get the new `conversation.state`, the agents'
    inbox the new row. Call it from every change to a conversation."""
    events.send_frame_on_commit(conversation_id, lambda: state_frame(conversation_id))
    events.echo_who_answers_on_commit(conversation_id)
    notify_inbox(conversation_id)


def notify_inbox(conversation_id: uuid.UUID | str) -> None:
    """After commit, the conversation's row to the agents' inbox (a customer message changes
    the row but not what the customer's page shows)."""
    # Imported here: the inbox app builds on this one, not the other way round.
    from inbox.events import notify_inbox_on_commit

    notify_inbox_on_commit(conversation_id)


# --- The customer's email address and rating --------------------------------------------------


def validated_email(email: object) -> str:
    if not isinstance(email, str) or not email.strip():
        raise HandoffError("bad_email", "Please enter your email address.")
    email = email.strip()
    try:
        if len(email) > EMAIL_MAX_CHARS:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError:
        raise HandoffError(
            "bad_email", "That doesn't look like an email address. Please check it."
        ) from None
    return email


def save_contact_email(conversation: Conversation, email: object) -> str:
    """Store the address the team answers at (asked for outside business hours). Returns it."""
    email = validated_email(email)
    with transaction.atomic():
        changed = (
            Conversation.objects.filter(pk=conversation.pk)
            .exclude(contact_email=email)
            .update(contact_email=email, updated_at=_now())
        )
        if changed:
            conversation.contact_email = email
            notice = Turn.objects.create(
                conversation_id=conversation.pk,
                author=Turn.Author.SYSTEM,
                text=EMAIL_SAVED.format(email=email),
            )
            events.send_turn_on_commit(notice)
            conversation_changed(conversation.pk)
    return email


def validated_score(score: object) -> int:
    # bool is an int subclass: `true` is no score.
    if type(score) is not int or not 1 <= score <= 5:
        raise HandoffError("bad_score", "Please choose a rating from 1 to 5.")
    return score


def validated_comment(comment: object) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise HandoffError("bad_comment", "The comment must be text.")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX_CHARS:
        raise HandoffError(
            "comment_too_long",
            f"Your comment is {len(comment)} characters long; the limit is {COMMENT_MAX_CHARS}.",
        )
    return comment


def rate(conversation: Conversation, score: object, comment: object = "") -> None:
    """The customer rates a resolved conversation, once: one conditional UPDATE, so a second
    rating (from another tab, at the same moment) is refused with `already_rated`."""
    score = validated_score(score)
    comment = validated_comment(comment)
    now = _now()
    with transaction.atomic():
        rated = Conversation.objects.filter(
            pk=conversation.pk, status=Status.RESOLVED, rated_at__isnull=True
        ).update(rating=score, rating_comment=comment, rated_at=now, updated_at=now)
        if not rated:
            rated_at = (
                Conversation.objects.filter(pk=conversation.pk)
                .values_list("rated_at", flat=True)
                .first()
            )
            if rated_at is not None:
                raise HandoffError(
                    "already_rated", "You have already rated this conversation. Thank you!"
                )
            raise HandoffError(
                "not_resolved", "You can rate this conversation once it has been resolved."
            )
        conversation.rating, conversation.rating_comment, conversation.rated_at = (
            score,
            comment,
            now,
        )
        conversation_changed(conversation.pk)


# --- Returning customers ----------------------------------------------------------------------


def start_new_conversation(customer: Customer) -> Conversation:
    """A fresh conversation for the customer; their newest one is reused while it is still
    empty, so pressing "New conversation" again and again makes no pile of empty tickets."""
    empty = (
        customer.conversations.filter(status=Status.OPEN, turns__isnull=True)
        .order_by("-created_at")
        .first()
    )
    return empty or Conversation.objects.create(customer=customer)


def previous_conversations(customer: Customer, limit: int = 50) -> list[dict[str, Any]]:
    """The customer's conversations that have messages, most recent activity first, with the
    status, dates and the start of the last message (one query)."""
    last = (
        Turn.objects.filter(conversation=OuterRef("pk"))
        .exclude(author=Turn.Author.SYSTEM)
        .exclude(text="")
        .order_by("-id")
    )
    conversations = (
        Conversation.objects.filter(customer=customer)
        .annotate(
            last_text=Left(Subquery(last.values("text")[:1]), PREVIEW_CHARS),
            last_author=Subquery(last.values("author")[:1]),
            activity=Coalesce("last_message_at", "created_at"),
        )
        .filter(last_text__isnull=False)
        .order_by("-activity", "-created_at")[:limit]
    )
    return [
        {
            "id": str(conversation.pk),
            "status": conversation.status,
            "created": conversation.created_at.isoformat(),
            "last_message_at": conversation.activity.isoformat(),
            "last_message": {"author": conversation.last_author, "text": conversation.last_text},
            "rated": conversation.rated_at is not None,
        }
        for conversation in conversations
    ]


def _now() -> datetime:
    return timezone.now()
