"""The inbox list: views, filters, full-text search, the waiting-first order and keyset pages.
Reads only (services write). docs/inbox.md "Triage" describes the parameters.

Order: conversations where a person is expected and the customer waits (pending, with a
customer message nobody answered) come first, longest waiting first; then all others, latest
activity first. Each part is walked by a keyset cursor, so page 1 stays cheap at 100,000
conversations: the first part is the (small) pending set, the second walks the
(last_message_at, id) index.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from conversations.models import Conversation, Customer, Turn

from . import events
from .models import ConversationLabel, Label

Status = Conversation.Status

VIEWS = ("all", "mine", "unassigned")
STATUSES = {
    "active": (Status.OPEN, Status.PENDING, Status.SNOOZED),
    "all": None,
    **{s.value: (s.value,) for s in Status},
}
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_QUERY_CHARS = 200
PARAMETERS = {"view", "status", "assignee", "label", "rating", "from", "to", "q", "cursor"}
PARAMETERS |= {"limit", "id", "language"}


class BadQuery(ValueError):
    """A parameter the inbox can't use: 400 {"error", "code"}."""

    def __init__(self, message: str, code: str = "bad_parameter") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class InboxQuery:
    view: str = "all"
    statuses: tuple[str, ...] | None = STATUSES["active"]
    assignee_id: int | None = None
    label_id: int | None = None
    rating: int | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    search: str = ""
    cursor: tuple[int, str, str] | None = None  # (part, key, id)
    limit: int = PAGE_SIZE
    conversation_id: uuid.UUID | None = None
    language: str = ""


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    query: InboxQuery = field(repr=False)


def _int(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}.")
    return int(value)


def _day(params: dict[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"{name} must be a date such as 2026-03-31.") from None
    return timezone.make_aware(datetime.combine(day, time.min))


def parse_query(params: dict[str, str]) -> InboxQuery:
    """The API's query parameters, checked: anything unknown or malformed is a BadQuery."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise BadQuery(f"Unknown parameter: {unknown[0]}.", "unknown_parameter")
    view = params.get("view") or "all"
    if view not in VIEWS:
        raise BadQuery("view must be all, mine or unassigned.")
    status = params.get("status") or "active"
    if status not in STATUSES:
        raise BadQuery(f"status must be one of {', '.join(STATUSES)}.")
    label_id = _int(params, "label", 1, 2**31)
    if label_id is not None and not Label.objects.filter(pk=label_id).exists():
        raise BadQuery("There is no such label.", "unknown_label")
    created_from = _day(params, "from")
    to = _day(params, "to")
    created_before = to + timedelta(days=1) if to else None
    if created_from and created_before and created_from >= created_before:
        raise BadQuery("from must be on or before to.")
    search = " ".join((params.get("q") or "").split())
    if len(search) > MAX_QUERY_CHARS:
        raise BadQuery(f"Search for at most {MAX_QUERY_CHARS} characters.")
    language = (params.get("language") or "").strip().lower()
    if language and not re.fullmatch(r"[a-z]{2,3}", language):
        raise BadQuery("language must be a language code such as en, de or fr.")
    conversation_id = None
    if params.get("id"):
        try:
            conversation_id = uuid.UUID(params["id"])
        except ValueError:
            raise BadQuery("id must be a conversation's id.") from None
    return InboxQuery(
        view=view,
        statuses=STATUSES[status],
        assignee_id=_int(params, "assignee", 1, 2**31),
        label_id=label_id,
        rating=_int(params, "rating", 1, 5),
        created_from=created_from,
        created_before=created_before,
        search=search,
        cursor=_decode_cursor(params.get("cursor")),
        limit=_int(params, "limit", 1, MAX_PAGE_SIZE) or PAGE_SIZE,
        conversation_id=conversation_id,
        language=language,
    )


def _encode_cursor(part: int, key: datetime, pk: uuid.UUID) -> str:
    raw = json.dumps([part, key.isoformat(), str(pk)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str | None) -> tuple[int, str, str] | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        part, key, pk = json.loads(raw)
        if part not in (1, 2) or parse_datetime(key) is None:
            raise ValueError
        uuid.UUID(pk)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadQuery("cursor is not one this inbox gave out.", "bad_cursor") from None
    return int(part), key, pk


# --- Search -----------------------------------------------------------------------------------


def _fts5_phrase(search: str) -> str:
    """Each word a quoted FTS5 string (its own syntax can't be injected), all required."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in search.split())


def _search(
    queryset: QuerySet[Conversation], search: str, common: bool | None = None
) -> QuerySet[Conversation]:
    """Messages (Turn.text) and customers (name, email, external id). Postgres: full-text
    search on GIN expression indexes (migration inbox 0002; 'simple' configuration, as
    customers write in many languages); SQLite: the FTS5 table inbox_turn_fts."""
    if connection.vendor == "postgresql":
        return _search_postgres(queryset, search, common)
    matches: Any
    if connection.vendor == "sqlite":
        matches = RawSQL(
            "SELECT t.conversation_id FROM inbox_turn_fts f"
            " JOIN conversations_turn t ON t.id = f.rowid WHERE inbox_turn_fts MATCH %s",
            (_fts5_phrase(search),),
        )
    else:  # another database: a plain substring match
        matches = Turn.objects.filter(text__icontains=search).values("conversation_id")
    named = Customer.objects.filter(
        Q(display_name__icontains=search)
        | Q(email__icontains=search)
        | Q(external_id__icontains=search)
    ).values("id")
    return queryset.filter(Q(pk__in=matches) | Q(customer_id__in=named))


# Postgres: a word in more turns than this is "common". Then each listed conversation is
# checked in the list's order (EXISTS on its turns: a page fills after a few dozen); for rarer
# words the GIN index finds the few conversations first. Either plan alone is slow for the
# other kind of word (1M matching turns to collect; 100k conversations to check).
# (Words the statistics don't know are estimated at 0.5 % of the turns: 10,000 at 2M.)
COMMON_TURNS = 20_000


def is_common_word(search: str) -> bool:
    """Postgres: whether the search matches more than COMMON_TURNS turns, by the planner's
    estimate (the expression index's word statistics, from ANALYZE): about 1 ms, where
    counting the matches costs 50-80 ms for a common word at 2M turns."""
    if connection.vendor != "postgresql" or not search:
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM conversations_turn"
            " WHERE to_tsvector('simple'::regconfig, text)"
            " @@ websearch_to_tsquery('simple'::regconfig, %s)",
            [search],
        )
        (plan,) = cursor.fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return bool(plan[0]["Plan"]["Plan Rows"] >= COMMON_TURNS)


def _search_postgres(
    queryset: QuerySet[Conversation], search: str, common: bool | None = None
) -> QuerySet[Conversation]:
    """The SQL repeats the GIN indexes' expressions exactly (migration inbox 0002)."""
    customers = RawSQL(
        "SELECT id FROM conversations_customer WHERE to_tsvector('simple'::regconfig,"
        " display_name || ' ' || email || ' ' || coalesce(external_id, ''))"
        " @@ websearch_to_tsquery('simple'::regconfig, %s)",
        (search,),
    )
    if not (is_common_word(search) if common is None else common):
        turns = RawSQL(
            "SELECT conversation_id FROM conversations_turn"
            " WHERE to_tsvector('simple'::regconfig, text)"
            " @@ websearch_to_tsquery('simple'::regconfig, %s)",
            (search,),
        )
        return queryset.filter(Q(pk__in=turns) | Q(customer_id__in=customers))
    said = RawSQL(
        "EXISTS (SELECT 1 FROM conversations_turn t"
        ' WHERE t.conversation_id = "conversations_conversation"."id"'
        " AND to_tsvector('simple'::regconfig, t.text)"
        " @@ websearch_to_tsquery('simple'::regconfig, %s))",
        (search,),
        output_field=BooleanField(),
    )
    return queryset.alias(said=said).filter(Q(said=True) | Q(customer_id__in=customers))


# --- The list ---------------------------------------------------------------------------------


def filtered(query: InboxQuery, agent: Any, common: bool | None = None) -> QuerySet[Conversation]:
    """Listed conversations matching the query's view and filters (unordered). Only
    conversations where the customer wrote something: opening the chat creates an empty one.
    `common`: whether the search is a common word (is_common_word; None: ask)."""
    queryset = Conversation.objects.filter(
        last_customer_message_at__isnull=False, last_message_at__isnull=False
    )
    if query.view == "mine":
        queryset = queryset.filter(assignee=agent)
    elif query.view == "unassigned":
        queryset = queryset.filter(assignee__isnull=True)
    if query.statuses is not None:
        queryset = queryset.filter(status__in=query.statuses)
    if query.assignee_id is not None:
        queryset = queryset.filter(assignee_id=query.assignee_id)
    if query.label_id is not None:
        labelled = ConversationLabel.objects.filter(label_id=query.label_id)
        queryset = queryset.filter(pk__in=labelled.values("conversation_id"))
    if query.rating is not None:
        queryset = queryset.filter(rating=query.rating)
    if query.created_from is not None:
        queryset = queryset.filter(created_at__gte=query.created_from)
    if query.created_before is not None:
        queryset = queryset.filter(created_at__lt=query.created_before)
    if query.conversation_id is not None:
        queryset = queryset.filter(pk=query.conversation_id)
    if query.language:
        # The browser's language when the chat started (conversations' context): "de" is
        # also "de-CH".
        queryset = queryset.filter(
            Q(browser_language__iexact=query.language)
            | Q(browser_language__istartswith=f"{query.language}-")
        )
    if query.search:
        queryset = _search(queryset, query.search, common)
    return queryset


def inbox_page(query: InboxQuery, agent: Any) -> Page:
    """One page of the inbox for this agent (unread counts are this agent's). Three queries:
    the waiting part, the rest (only when the page isn't full) and the rows' labels."""
    common = is_common_word(query.search)  # asked once: an EXPLAIN
    base = filtered(query, agent, common)
    annotated = events.annotate_rows(base, agent=agent)
    limit = query.limit
    found: list[tuple[int, Conversation]] = []
    part, raw_key, pk = query.cursor or (1, "", "")
    key = parse_datetime(raw_key) if raw_key else None
    if part == 1:
        waiting = annotated.filter(status=Status.PENDING, waiting__since__isnull=False)
        if key:
            waiting = waiting.filter(Q(waiting__since__gt=key) | Q(waiting__since=key, pk__gt=pk))
        if common:
            after = (key, uuid.UUID(pk)) if key else None
            found += [
                (1, c) for c in _first_waiting_in_chunks(waiting, query, agent, limit + 1, after)
            ]
        else:
            found += [(1, c) for c in waiting.order_by("waiting__since", "pk")[: limit + 1]]
        key, pk = None, ""
    if len(found) <= limit:
        # Everyone else: not (pending and waiting), latest activity first.
        rest = annotated.exclude(Q(status=Status.PENDING) & Q(waiting__since__isnull=False))
        if key:
            rest = rest.filter(Q(last_message_at__lt=key) | Q(last_message_at=key, pk__lt=pk))
        rest = rest.order_by("-last_message_at", "-pk")[: limit + 1 - len(found)]
        found += [(2, c) for c in rest]
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        last_part, last = found[-1]
        last_key = getattr(last, "waiting_since") if last_part == 1 else last.last_message_at  # noqa: B009 (an annotation)
        assert last_key is not None  # both parts list only rows with their key set
        next_cursor = _encode_cursor(last_part, last_key, last.pk)
    conversations = [c for _, c in found]
    events.attach_labels(conversations)
    return Page([events.row(c) for c in conversations], next_cursor, query)


# A common word is in most conversations: the waiting ones are checked this many at a time in
# the list's order, instead of all of them (5,000 EXISTS at 100k) before the sort.
WAITING_CHUNK = 200


def _first_waiting_in_chunks(
    waiting: QuerySet[Conversation],
    query: InboxQuery,
    agent: Any,
    wanted: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Conversation]:
    """The first `wanted` of `waiting` (already searched) after the cursor `after`, in waiting
    order, searching the waiting conversations chunk by chunk (the order and filters read
    indexes; only a chunk's turns are searched)."""
    unsearched = filtered(replace(query, search=""), agent).filter(
        status=Status.PENDING, waiting__since__isnull=False
    )
    order = ("waiting__since", "pk")
    found: list[Conversation] = []
    while len(found) < wanted:
        chunk = unsearched
        if after is not None:
            chunk = chunk.filter(
                Q(waiting__since__gt=after[0]) | Q(waiting__since=after[0], pk__gt=after[1])
            )
        ids = list(chunk.order_by(*order).values_list("waiting__since", "pk")[:WAITING_CHUNK])
        if not ids:
            break
        found += waiting.filter(pk__in=[pk for _, pk in ids]).order_by(*order)[
            : wanted - len(found)
        ]
        since, last = ids[-1]
        assert since is not None  # filtered on it
        after = (since, last)
        if len(ids) < WAITING_CHUNK:
            break
    return found


def labels() -> list[dict[str, object]]:
    return [label.as_event() for label in Label.objects.all()]
