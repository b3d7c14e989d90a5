"""The agent workspace's transitions. Each is one small function: one conditional UPDATE (so
two agents can never both own a conversation), the turns/notes it creates, and events sent on
commit. Views, the socket and the task call exactly one of these.

States (Conversation.status; the bot answers only while OPEN):

    open     the bot answers; nobody owns it (assignee NULL)
    pending  a person is asked for or has it: assignee NULL = waiting in the queue,
             assignee set = that agent has it (the bot stays quiet)
    snoozed  put aside by an agent until snoozed_until; wakes up as pending when the time
             passes (wake_snoozed) or the customer writes (wake_if_snoozed)
    resolved closed; resolved_at set; the customer is asked for a rating

    take_over / assign   open|pending|snoozed (unowned or mine) -> pending, assignee = agent
    hand_back_to_bot     pending|snoozed (unowned or mine)      -> open, assignee NULL
    snooze               open|pending (unowned or mine)         -> snoozed until a time
    resolve              open|pending|snoozed (unowned or mine) -> resolved
    reopen               resolved                               -> pending (assignee kept)

A transition on a conversation another agent owns raises TakenBy(name).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations import attachments
from conversations.email_replies import email_later_on_commit
from conversations.errors import Refused
from conversations.events import send_turn_on_commit
from conversations.models import Conversation, Turn, display_name
from conversations.selectors import conversation_snapshot
from conversations.state import conversation_changed
from support_bot.broker import BROKER_DOWN

from . import events, selectors
from .models import ConversationLabel, Label, Note, ReadMarker
from .tasks import assist

Status = Conversation.Status
User = Any  # a django.contrib.auth user (typed loosely: custom user models are allowed)

WORK_INBOX = "conversations.work_inbox"
WRITE_NOTE = "conversations.write_note"
RESOLVE = "conversations.resolve_conversation"

JOINED = "{name} from our team has joined the conversation."
HANDED_BACK = "You're chatting with our assistant again."
RESOLVED = "This conversation was resolved. If you need anything else, just write here again."
REOPENED = "This conversation was reopened by our team."


class InboxError(Refused):
    """A transition refused; `code` for programs, the message for people, `status` for HTTP."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code}


class NotFound(InboxError):
    status = 404
    code = "not_found"


class TakenBy(InboxError):
    """Another agent owns the conversation."""

    status = 409
    code = "taken"

    def __init__(self, agent_name: str, agent_id: int | None = None) -> None:
        super().__init__(f"Already taken by {agent_name}")
        self.agent_name = agent_name
        self.agent_id = agent_id

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "taken_by": self.agent_name}


class WrongState(InboxError):
    status = 409
    code = "wrong_state"


class Invalid(InboxError):
    code = "invalid"


class Unavailable(InboxError):
    """A part the request needs (the task queue) can't be reached now; trying again may work."""

    status = 503
    code = "unavailable"


def _now() -> datetime:
    return timezone.now()


def _owned_by_nobody_or(agent: User) -> Q:
    return Q(assignee__isnull=True) | Q(assignee=agent)


def get_conversation(conversation_id: uuid.UUID | str, *related: str) -> Conversation:
    """The conversation with `related` joined in; NotFound (a JSON 404) for a bad or unknown id."""
    try:
        return Conversation.objects.select_related(*related).get(pk=_uuid(conversation_id))
    except Conversation.DoesNotExist:
        raise NotFound("This conversation does not exist.") from None


def _get(conversation_id: uuid.UUID | str) -> Conversation:
    return get_conversation(conversation_id, "assignee")


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise NotFound("This conversation does not exist.") from None


def _transition(
    conversation_id: uuid.UUID | str,
    agent: User,
    *,
    from_states: tuple[str, ...],
    owned: bool = True,
    action: str,
    **updates: Any,
) -> Conversation:
    """One conditional UPDATE; on no match, say why (gone, someone else's, wrong state)."""
    pk = _uuid(conversation_id)
    condition = Q(pk=pk, status__in=from_states)
    if owned:
        condition &= _owned_by_nobody_or(agent)
    updates.setdefault("updated_at", _now())
    if Conversation.objects.filter(condition).update(**updates):
        return _get(pk)
    current = _get(pk)
    if owned and current.assignee_id not in (None, agent.pk) and current.assignee is not None:
        raise TakenBy(display_name(current.assignee), current.assignee_id)
    raise WrongState(f"A {current.status} conversation can't be {action}.")


def _system_turn(conversation: Conversation, text: str) -> Turn:
    turn = Turn.objects.create(conversation=conversation, author=Turn.Author.SYSTEM, text=text)
    send_turn_on_commit(turn)
    return turn


def _changed(conversation: Conversation) -> None:
    """After commit: the customer's sockets get the new `conversation.state` (the customer
    side's frame: the page asks for a rating once resolved), the agents the new inbox row."""
    conversation_changed(conversation.pk)


# --- Transitions ------------------------------------------------------------------------------


def _claim_updates(agent: User) -> dict[str, Any]:
    """Owning a conversation: pending, with the agent. Taken from the bot (open), it counts
    as an escalation by an agent. (SET expressions read the row as it was before.)"""
    now = _now()
    from_bot = When(status=Status.OPEN, then=Value(now))
    return {
        "assignee": agent,
        "status": Status.PENDING,
        "snoozed_until": None,
        "escalated_at": Case(from_bot, default=Coalesce(F("escalated_at"), Value(now))),
        "escalation_reason": Case(
            When(status=Status.OPEN, then=Value(Conversation.Escalation.AGENT.value)),
            When(escalation_reason="", then=Value(Conversation.Escalation.AGENT.value)),
            default=F("escalation_reason"),
        ),
    }


@transaction.atomic
def take_over(conversation_id: uuid.UUID | str, agent: User) -> Conversation:
    """The agent owns the conversation from now on, and the bot stops answering. Atomic: of
    two agents taking it at once exactly one wins; the other gets TakenBy(winner's name)."""
    return _give(conversation_id, agent, owner=agent, action="taken over (reopen it first)")


@transaction.atomic
def assign(conversation_id: uuid.UUID | str, agent: User, to_user_id: int) -> Conversation:
    """Give the conversation to another agent (one who may work the inbox). Only the owner,
    or anyone while nobody owns it, may pass it on."""
    target = get_user_model().objects.filter(pk=to_user_id, is_active=True).first()
    if target is None or not target.has_perm(WORK_INBOX):
        raise Invalid("That person can't work the inbox.")
    if target.pk == agent.pk:
        return take_over(conversation_id, agent)
    return _give(conversation_id, agent, owner=target, action="assigned (reopen it first)")


def _give(
    conversation_id: uuid.UUID | str, agent: User, *, owner: User, action: str
) -> Conversation:
    """`agent` makes `owner` the conversation's owner; the customer hears who joined."""
    pk = _uuid(conversation_id)
    before = Conversation.objects.filter(pk=pk).values_list("assignee_id", flat=True).first()
    conversation = _transition(
        pk,
        agent,
        from_states=(Status.OPEN, Status.PENDING, Status.SNOOZED),
        action=action,
        **_claim_updates(owner),
    )
    if before != owner.pk:
        _system_turn(conversation, JOINED.format(name=display_name(owner)))
    _changed(conversation)
    return conversation


@transaction.atomic
def hand_back_to_bot(conversation_id: uuid.UUID | str, agent: User) -> Conversation:
    conversation = _transition(
        conversation_id,
        agent,
        from_states=(Status.PENDING, Status.SNOOZED),
        action="handed back to the bot",
        assignee=None,
        status=Status.OPEN,
        snoozed_until=None,
    )
    _system_turn(conversation, HANDED_BACK)
    _changed(conversation)
    return conversation


def _clean_text(text: object, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise Invalid(f"Please write a {what} first.")
    text = text.strip()
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise Invalid(f"That {what} is {len(text)} characters long; the limit is {limit}.")
    return text


def agent_reply(
    conversation_id: uuid.UUID | str,
    agent: User,
    text: object,
    files: Sequence[attachments.CheckedFile] = (),
) -> Turn:
    """A message from the agent to the customer, live on the customer's sockets: text, files
    (checked by conversations.attachments.validate) or both. Replying to a conversation nobody
    owns takes it over first; someone else's raises TakenBy. Files are stored with the turn or,
    should anything fail, not at all."""
    saved_files: list[str] = []
    try:
        return _agent_reply(conversation_id, agent, text, files, saved_files)
    except BaseException:
        attachments.discard(saved_files)
        raise


@transaction.atomic
def _agent_reply(
    conversation_id: uuid.UUID | str,
    agent: User,
    text: object,
    files: Sequence[attachments.CheckedFile],
    saved_files: list[str],
) -> Turn:
    has_text = isinstance(text, str) and bool(text.strip())
    body = _clean_text(text, "reply") if has_text or not files else ""
    conversation = _get(conversation_id)
    if conversation.status == Status.RESOLVED:
        raise WrongState("This conversation is resolved: reopen it to reply.")
    if conversation.assignee_id != agent.pk:
        conversation = take_over(conversation.pk, agent)
    turn = Turn.objects.create(
        conversation=conversation, author=Turn.Author.AGENT, text=body, agent=agent
    )
    attachments.store(turn, files, saved_files)
    now = _now()
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message_at=now, agent_read_at=now, updated_at=now
    )
    _read_up_to(conversation.pk, agent, now)
    send_turn_on_commit(turn)
    events.notify_inbox_on_commit(conversation.pk)
    # Emailed if the customer hasn't seen it after a while (docs/email.md).
    email_later_on_commit(turn)
    return turn


@transaction.atomic
def add_note(conversation_id: uuid.UUID | str, agent: User, text: object) -> Note:
    """An internal note: stored apart from the turns and sent to the team's group only."""
    body = _clean_text(text, "note")
    conversation = _get(conversation_id)
    note = Note.objects.create(conversation=conversation, author=agent, text=body)
    events.send_note_on_commit(note)
    return note


@transaction.atomic
def snooze(conversation_id: uuid.UUID | str, agent: User, until: datetime) -> Conversation:
    if timezone.is_naive(until):
        raise Invalid("Give the time with its time zone.")
    if until <= _now():
        raise Invalid("Snooze until a time in the future.")
    if until > _now() + timedelta(minutes=SNOOZE_MAX_MINUTES):
        raise Invalid("Snooze for at most 30 days.")
    conversation = _transition(
        conversation_id,
        agent,
        from_states=(Status.OPEN, Status.PENDING),
        action="snoozed",
        status=Status.SNOOZED,
        snoozed_until=until,
    )
    _changed(conversation)
    return conversation


@transaction.atomic
def resolve(conversation_id: uuid.UUID | str, agent: User) -> Conversation:
    now = _now()
    conversation = _transition(
        conversation_id,
        agent,
        from_states=(Status.OPEN, Status.PENDING, Status.SNOOZED),
        action="resolved",
        status=Status.RESOLVED,
        resolved_at=now,
        snoozed_until=None,
    )
    _system_turn(conversation, RESOLVED)
    _changed(conversation)
    return conversation


@transaction.atomic
def reopen(conversation_id: uuid.UUID | str, agent: User) -> Conversation:
    """Back to the team (pending); whoever owned it still does."""
    conversation = _transition(
        conversation_id,
        agent,
        from_states=(Status.RESOLVED,),
        owned=False,
        action="reopened",
        status=Status.PENDING,
        resolved_at=None,
    )
    _system_turn(conversation, REOPENED)
    _changed(conversation)
    return conversation


def _read_up_to(conversation_id: uuid.UUID, agent: User, when: datetime) -> None:
    ReadMarker.objects.update_or_create(
        conversation_id=conversation_id, user=agent, defaults={"read_at": when}
    )


def mark_read(conversation_id: uuid.UUID | str, agent: User) -> None:
    """This agent has seen every customer message so far (their own read marker; the team's
    shared agent_read_at moves too, for what reads it)."""
    pk = _uuid(conversation_id)
    with transaction.atomic():
        now = _now()
        if not Conversation.objects.filter(pk=pk).update(agent_read_at=now):
            raise NotFound("This conversation does not exist.")
        _read_up_to(pk, agent, now)
        events.notify_inbox_on_commit(conversation_id)


def wake_snoozed(now: datetime | None = None) -> int:
    """Snoozed conversations whose time has come are pending again. Cheap when there are
    none (one indexed query); called when the inbox lists and by `manage.py wake_snoozed`."""
    now = now or _now()
    due = list(
        Conversation.objects.filter(status=Status.SNOOZED, snoozed_until__lte=now).values_list(
            "pk", flat=True
        )[:500]
    )
    if not due:
        return 0
    with transaction.atomic():
        woken = list(
            Conversation.objects.filter(
                pk__in=due, status=Status.SNOOZED, snoozed_until__lte=now
            ).values_list("pk", flat=True)
        )
        Conversation.objects.filter(pk__in=woken, status=Status.SNOOZED).update(
            status=Status.PENDING, snoozed_until=None, updated_at=now
        )
        for pk in woken:
            events.notify_inbox_on_commit(pk)
    return len(woken)


# --- Reading ----------------------------------------------------------------------------------


def inbox_rows(agent: User, params: dict[str, str] | None = None) -> dict[str, Any]:
    """One page of the inbox for `agent` (inbox.selectors): {"rows", "next_cursor"}. Snoozed
    conversations whose time has come wake first."""
    try:
        query = selectors.parse_query(params or {})
    except selectors.BadQuery as bad:
        error = Invalid(bad.message)
        error.code = bad.code
        raise error from None
    wake_snoozed()
    page = selectors.inbox_page(query, agent)
    return {"rows": page.rows, "next_cursor": page.next_cursor}


# --- Labels -----------------------------------------------------------------------------------


def _label(value: object) -> Label:
    """A label by id or name (any case); agents pick existing labels only."""
    label = None
    if type(value) is int:
        label = Label.objects.filter(pk=value).first()
    elif isinstance(value, str) and value.strip():
        label = Label.objects.filter(name__iexact=value.strip()).first()
    else:
        raise Invalid("Send label: a label's id or name.")
    if label is None:
        error = Invalid("There is no such label: an administrator creates labels.")
        error.code = "unknown_label"
        raise error
    return label


@transaction.atomic
def add_label(
    conversation_id: uuid.UUID | str, agent: User, label: object
) -> list[dict[str, object]]:
    """Put an existing label on the conversation (again: nothing changes). Every agent's row
    updates after commit."""
    chosen = _label(label)
    conversation = _get(conversation_id)
    ConversationLabel.objects.get_or_create(
        conversation=conversation, label=chosen, defaults={"added_by": agent}
    )
    events.notify_inbox_on_commit(conversation.pk)
    return conversation_labels(conversation.pk)


@transaction.atomic
def remove_label(
    conversation_id: uuid.UUID | str, agent: User, label: object
) -> list[dict[str, object]]:
    chosen = _label(label)
    conversation = _get(conversation_id)
    ConversationLabel.objects.filter(conversation=conversation, label=chosen).delete()
    events.notify_inbox_on_commit(conversation.pk)
    return conversation_labels(conversation.pk)


def conversation_labels(conversation_id: uuid.UUID | str) -> list[dict[str, object]]:
    """The conversation's labels by name; NotFound for no such conversation."""
    if not Conversation.objects.filter(pk=_uuid(conversation_id)).exists():
        raise NotFound("This conversation does not exist.")
    links = ConversationLabel.objects.filter(conversation_id=conversation_id)
    return [link.label.as_event() for link in links.select_related("label").order_by("label__name")]


def conversation_for_agent(conversation_id: uuid.UUID | str) -> dict[str, Any]:
    """What the agent's conversation view starts from: the customer's snapshot (the same
    turns the customer sees), the team's notes, and the inbox row."""
    conversation = _get(conversation_id)
    snapshot = conversation_snapshot(conversation, shown_only=True)
    notes = [
        events.note_event(n)
        for n in Note.objects.filter(conversation=conversation).select_related("author")
    ]
    return {**snapshot, "notes": notes, "row": events.row_for(conversation.pk)}


def assignable_agents() -> list[dict[str, Any]]:
    """Active users who may work the inbox (directly, by group, or superusers)."""
    users = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(
            Q(is_superuser=True)
            | Q(user_permissions__codename="work_inbox")
            | Q(groups__permissions__codename="work_inbox")
        )
        .distinct()
        .order_by("first_name", "username")
    )
    return [{"id": u.pk, "name": display_name(u)} for u in users]


def can(user: Any, permission: str) -> bool:
    return bool(user.is_authenticated and user.has_perm(permission))


# The longest snooze: a month. Longer is no snooze (and far enough makes dates overflow).
SNOOZE_MAX_MINUTES = 60 * 24 * 30


def parse_until(value: object) -> datetime:
    """An ISO 8601 time, or a whole number of minutes from now (1 to SNOOZE_MAX_MINUTES)."""
    if type(value) is int:  # bool is an int subclass
        if not 1 <= value <= SNOOZE_MAX_MINUTES:
            raise Invalid(f"Snooze for 1 to {SNOOZE_MAX_MINUTES} minutes (30 days).")
        return _now() + timedelta(minutes=value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed
    raise Invalid("Snooze needs `until` (an ISO 8601 time) or `minutes` (a whole number).")


@dataclass(frozen=True)
class AssistRequest:
    conversation_id: uuid.UUID
    kind: str


ASSIST_KINDS = ("summary", "suggest")


def request_assist(conversation_id: uuid.UUID | str, agent: User, kind: object) -> AssistRequest:
    """Queue an AI summary or suggested reply; the result goes to this agent's sockets only."""
    if kind not in ASSIST_KINDS:
        raise Invalid('kind must be "summary" or "suggest".')
    conversation = _get(conversation_id)
    try:
        # Nothing is written for a request, so nothing waits for a commit.
        assist.delay(str(conversation.pk), agent.pk, str(kind))
    except BROKER_DOWN as error:
        raise Unavailable(
            "The assistant can't be reached right now. Try again in a moment."
        ) from error
    return AssistRequest(conversation.pk, str(kind))
