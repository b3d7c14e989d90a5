"""When the bot hands a conversation to a person, and how.

- Escalation rules (EscalationRule rows, edited by operators) matched against each customer
  message, and the abstain streak checked after each finished bot reply.
- The customer's yes to the bot's offer of a person (accepts_offered_person): the same
  handover as "Talk to a person".
- escalate(): OPEN → PENDING in one conditional UPDATE, plus a notice telling the customer a
  person will join (or, outside business hours with no agent at the inbox, asking for an email
  address), in the customer's language (bot/wording.py).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from bot.affirmation import Affirmative, affirmative
from bot.wording import wording_for
from support_bot import config_cache

from . import events, presence, selectors
from .business_hours import availability, describe_opening
from .models import Conversation, EscalationRule, Turn
from .state import conversation_changed, state_frame

Status = Conversation.Status
Reason = Conversation.Escalation

# "*" in a rule stands for up to this many words ("connect me * person").
WILDCARD_MAX_WORDS = 8


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


def accepts_offered_person(conversation: Conversation, turn: Turn) -> Affirmative | None:
    """Whether this customer message is a yes to the bot's offer of a person: the latest turn
    before it that is not the customer's is a bot reply that offered one (Turn.offers_person),
    and the message says yes and nothing else (bot/affirmation.py: "yes please", "ja gerne",
    "oui merci"). It hands over like "Talk to a person"; a yes to anything else, or one with a
    new question ("yes but where is my order?"), is answered as usual. Only asked while the
    bot answers; reads the database only for a message that says yes."""
    if not conversation.bot_answers:
        return None
    yes = affirmative(turn.text)
    if yes is None:
        return None
    before = (
        Turn.objects.filter(conversation_id=conversation.pk, id__lt=turn.pk)
        .shown()
        .exclude(author=Turn.Author.CUSTOMER)
        .only("author", "status", "abstained")
        .order_by("-id")
        .first()
    )
    return yes if before is not None and before.offers_person else None


def after_bot_reply(reply: Turn, language: str | None = None) -> bool:
    """After a bot reply is finished: when it is the Nth abstention in a row (the abstain
    streak rule), hand the conversation to a person. Returns whether it did. `language`: the
    customer's, when the reply already knows it (else the notice reads it)."""
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
        return escalate(conversation, Reason.ABSTAINED, language=language)


def escalate(conversation: Conversation, reason: str, *, language: str | None = None) -> bool:
    """Hand the conversation to a person: OPEN → PENDING in one conditional UPDATE, so it
    happens once however many messages or sockets ask at the same moment. The customer is told
    a person will join, or asked for an email address outside business hours.

    A resolved conversation can also be escalated when the customer asks for a person.
    Returns False (and changes nothing) when the conversation is already with the team.
    Call it inside a transaction: the notice and the status change commit together.
    `language`: the customer's, when the caller knows it (else read from their messages).
    """
    allowed = [Status.OPEN]
    if reason == Reason.CUSTOMER_REQUEST:
        allowed.append(Status.RESOLVED)
    now = timezone.now()
    changed = Conversation.objects.filter(pk=conversation.pk, status__in=allowed).update(
        status=Status.PENDING, escalated_at=now, escalation_reason=reason, updated_at=now
    )
    if not changed:
        return False
    conversation.status = Status.PENDING
    conversation.escalated_at = now
    conversation.escalation_reason = reason
    hours = availability(now)
    wording = wording_for(language or selectors.customer_language(conversation.pk))
    # An agent at the inbox answers whatever the hours say (issue 16: "away" while one was).
    if hours.open_now or presence.team_online():
        text = wording.person_will_join
    else:
        when = (
            describe_opening(hours.next_opening, now, wording)
            if hours.next_opening
            else wording.opening_soon
        )
        text = wording.team_away.format(when=when)
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
