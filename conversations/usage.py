"""What the bot costs: tokens and cost (Turn.cost, priced when the reply was stored) summed
per conversation, per prompt version and per day. One aggregate query each."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any, TypedDict

from django.db.models import Count, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from .models import Turn


class Totals(TypedDict):
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


def _bot_turns() -> QuerySet[Turn]:
    return Turn.objects.filter(author=Turn.Author.BOT).exclude(status="")


def _aggregates() -> dict[str, Any]:
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=14, decimal_places=8))
    return {
        "turns": Count("id"),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cost": Coalesce(Sum("cost"), zero),
    }


def _totals(row: dict[str, Any]) -> Totals:
    return Totals(
        turns=int(row["turns"] or 0),
        prompt_tokens=int(row["prompt_tokens"] or 0),
        completion_tokens=int(row["completion_tokens"] or 0),
        cost=Decimal(row["cost"] or 0),
    )


def turn_cost(turn: Turn) -> Decimal:
    """A turn's cost as stored (0 for turns that cost nothing or predate pricing)."""
    return turn.cost or Decimal(0)


def per_conversation(conversation_id: uuid.UUID | str) -> Totals:
    return _totals(_bot_turns().filter(conversation_id=conversation_id).aggregate(**_aggregates()))


def per_version(version_ids: list[int] | None = None) -> dict[int | None, Totals]:
    """{version id: totals}; None is the replies made without a version (built-in default)."""
    turns = _bot_turns()
    if version_ids is not None:
        turns = turns.filter(prompt_version_id__in=version_ids)
    rows: Any = turns.values("prompt_version_id").annotate(**_aggregates()).order_by()
    return {row["prompt_version_id"]: _totals(row) for row in rows}


def per_day(since: date | None = None, version_id: int | None = None) -> list[tuple[date, Totals]]:
    """Totals per day (in the database's time zone handling of USE_TZ), oldest first."""
    turns = _bot_turns()
    if since is not None:
        turns = turns.filter(created_at__date__gte=since)
    if version_id is not None:
        turns = turns.filter(Q(prompt_version_id=version_id))
    rows: Any = (
        turns.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(**_aggregates())
        .order_by("day")
    )
    return [(row["day"], _totals(row)) for row in rows]
