"""When people answer: the BusinessHours rows (none at all: always), read through the
configuration cache, and how the customer is told when the team is back (in their language:
bot/wording.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bot.wording import ENGLISH, Wording
from support_bot import config_cache

from .models import BusinessHours


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
    local = (now or timezone.now()).astimezone(zone)
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


def describe_opening(opening: datetime, now: datetime, wording: Wording = ENGLISH) -> str:
    """ "today at 09:00", "tomorrow at 09:00", "on Monday at 09:00" (+ the time zone), in
    `wording`'s language ("morgen um 09:00 Uhr", "lundi à 9 h 00"...)."""
    zone = support_zone()
    opening, now = opening.astimezone(zone), now.astimezone(zone)
    return wording.opening(
        days=(opening.date() - now.date()).days,
        weekday=opening.weekday(),
        hour=opening.hour,
        minute=opening.minute,
        zone=str(settings.SUPPORT_TIME_ZONE),
    )


def replace_week(periods: Sequence[tuple[int, time, time]]) -> None:
    """The whole week's opening periods, (weekday, opens, closes), in place of the rows there
    were, in one transaction (an empty week: always open). Every process reloads them once it
    commits (the rows' manager announces the change)."""
    with transaction.atomic():
        BusinessHours.objects.all().delete()
        BusinessHours.objects.bulk_create(
            BusinessHours(weekday=day, opens=opens, closes=closes) for day, opens, closes in periods
        )
