"""Whether people answer now, as the customer is told: the team is online when some agent has
the inbox open (conversations/presence.py), whatever the business hours; away only when nobody
has and it is outside business hours (conversations/business_hours.py). Also how fast the team
typically answers: the median time from a handover to the first agent reply over the last
REPLY_TIME_WINDOW, measured, not configured. See docs/handoff.md (Availability).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from bot.wording import ENGLISH, Wording

from . import presence
from .business_hours import availability, describe_opening
from .models import Conversation, Turn

REPLY_TIME_WINDOW = timedelta(days=7)
# Fewer handovers answered than this in the window: DEFAULT_REPLY_MINUTES (one quick or slow
# answer says little about the next).
REPLY_TIME_MIN_SAMPLES = 3
DEFAULT_REPLY_MINUTES = 5
# The newest handovers measured: enough for a median, bounded for a busy install.
REPLY_TIME_MAX_SAMPLES = 500
# Each process measures again this often: one query, and the median moves slowly.
REPLY_TIME_CACHE_S = 300.0


@dataclass(frozen=True)
class TeamAvailability:
    online: bool  # some agent has the inbox open
    open_now: bool  # within business hours
    next_opening: datetime | None  # when the hours start again; None while open
    reply_minutes: int  # typically, from a handover to an agent's first reply

    @property
    def answers_now(self) -> bool:
        """Whether a person may answer soon: someone is at the inbox, or it is within the
        hours (when nobody is, an agent is expected to be)."""
        return self.online or self.open_now


def team_availability(now: datetime | None = None) -> TeamAvailability:
    now = now or timezone.now()
    hours = availability(now)
    return TeamAvailability(
        online=presence.team_online(),
        open_now=hours.open_now,
        next_opening=hours.next_opening,
        reply_minutes=reply_minutes(),
    )


def team_answers_now() -> bool:
    """The cheap form of team_availability().answers_now (no reply time), for the handover
    notice and the email form: one Redis read only outside business hours."""
    return availability().open_now or presence.team_online()


def first_reply_delays(now: datetime | None = None) -> list[float]:
    """Seconds from handover to the first agent reply after it, for the conversations handed
    over within REPLY_TIME_WINDOW (by the customer or the bot, not taken over by an agent) and
    answered (the newest REPLY_TIME_MAX_SAMPLES)."""
    now = now or timezone.now()
    first_reply = (
        Turn.objects.filter(
            conversation_id=OuterRef("pk"),
            author=Turn.Author.AGENT,
            created_at__gte=OuterRef("escalated_at"),
        )
        .order_by("created_at")
        .values("created_at")[:1]
    )
    rows = (
        Conversation.objects.filter(escalated_at__gte=now - REPLY_TIME_WINDOW)
        # An agent who took a conversation over from the bot kept nobody waiting.
        .exclude(escalation_reason=Conversation.Escalation.AGENT)
        .annotate(first_reply_at=Subquery(first_reply))
        .filter(first_reply_at__isnull=False)
        .order_by("-escalated_at")
        .values_list("escalated_at", "first_reply_at")[:REPLY_TIME_MAX_SAMPLES]
    )
    return [(replied - escalated).total_seconds() for escalated, replied in rows]


def typical_reply_minutes(now: datetime | None = None) -> int:
    """The median of first_reply_delays in whole minutes (rounded up, at least 1), or
    DEFAULT_REPLY_MINUTES with fewer than REPLY_TIME_MIN_SAMPLES of them."""
    delays = first_reply_delays(now)
    if len(delays) < REPLY_TIME_MIN_SAMPLES:
        return DEFAULT_REPLY_MINUTES
    return max(1, math.ceil(statistics.median(delays) / 60))


_cached_minutes: tuple[float, int] | None = None
_cache_lock = threading.Lock()


def reply_minutes() -> int:
    """typical_reply_minutes, measured again every REPLY_TIME_CACHE_S in each process."""
    global _cached_minutes
    cached = _cached_minutes
    if cached is not None and time.monotonic() < cached[0]:
        return cached[1]
    with _cache_lock:
        minutes = typical_reply_minutes()
        _cached_minutes = (time.monotonic() + REPLY_TIME_CACHE_S, minutes)
    return minutes


def forget_cached_reply_time() -> None:
    """For tests: the next reply_minutes() measures."""
    global _cached_minutes
    _cached_minutes = None


def describe(
    team: TeamAvailability, wording: Wording = ENGLISH, now: datetime | None = None
) -> str:
    """The header's line: "Our team is online · typically replies in 3 minutes", "Our team
    typically replies in 5 minutes" (within the hours, nobody at the inbox), "Our team is away
    · back tomorrow at 09:00 (Europe/Amsterdam time)"."""
    minutes = (
        wording.minutes_one
        if team.reply_minutes == 1
        else wording.minutes_many.format(n=team.reply_minutes)
    )
    if team.online:
        return wording.team_online.format(minutes=minutes)
    if team.open_now:
        return wording.team_replies_in.format(minutes=minutes)
    when = (
        describe_opening(team.next_opening, now or timezone.now(), wording)
        if team.next_opening
        else wording.opening_soon
    )
    return wording.team_away_until.format(when=when)


def customer_availability(wording: Wording = ENGLISH) -> dict[str, Any]:
    """What the chat page shows and polls (GET /chat/availability/)."""
    now = timezone.now()
    team = team_availability(now)
    return {
        "online": team.online,
        "away": not team.answers_now,
        "reply_minutes": team.reply_minutes,
        "text": describe(team, wording, now),
    }
