"""An agent's away setting (issue 17.9): an away agent keeps the inbox open and receives
everything, but does not count as the team being online for customers
(conversations/availability.py reads it through conversations/presence.py)."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from . import events, presence
from .services import InboxError


class AwayUnavailable(InboxError):
    status = 503
    code = "unavailable"


def set_away(user: Any, away: bool) -> bool:
    """Store it (until they change it) and tell the agent's other tabs (`{"type":"away"}`)."""
    try:
        presence.set_away(user.pk, away)
    except RedisError:
        raise AwayUnavailable("Your status can't be saved right now. Try again.") from None
    events.send_to_agent(user.pk, {"type": "away", "away": away})
    return away
