"""Which agents have the inbox open: kept in conversations/presence.py, below this app, since
the customer's side reads it too (is the team online?). The inbox's sockets write it."""

from conversations.presence import (
    LAPSE_S,
    PRESENT_TRUSTED_S,
    RENEW_S,
    _key,  # tests plant a lapsed membership
    agents_online,
    anyone_present,
    arrive,
    forget_cached_presence,
    is_away,
    leave,
    renew,
    set_away,
)

__all__ = [
    "LAPSE_S",
    "PRESENT_TRUSTED_S",
    "RENEW_S",
    "_key",
    "agents_online",
    "anyone_present",
    "arrive",
    "forget_cached_presence",
    "is_away",
    "leave",
    "renew",
    "set_away",
]
