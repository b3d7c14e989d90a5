"""Whether a customer has seen a turn: when their sockets on a conversation were last open, in
Redis, for every process to read (what email_replies.py asks before emailing an agent's reply).

Each customer socket (chat page or widget) on a conversation holds a member of that
conversation's sorted set, scored by the time it is seen until: while open, a little past its
next renewal (it renews on connect and on a ping LAPSE_S / 3 after the last renewal: pages
ping every 4 s, every 25 s when nobody watches them); on
close, the moment it closed. A turn was seen when the set's highest score is at or after the
turn was sent: a socket was open then, or opened afterwards (it got the turn in its snapshot).
A socket whose process died counts as open until it lapses (at most LAPSE_S).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from support_bot.redis_clients import async_client, key, sync_client

# An open socket counts as present this long after its last renewal (pings every 4 to 25 s).
LAPSE_S = 60.0
# Nothing older is asked about (email_replies.WINDOW): the set expires this long after a write.
KEEP_S = 8 * 24 * 3600


def _key(conversation_id: uuid.UUID | str) -> str:
    return key("chat", "seen", conversation_id)


async def _mark(conversation_id: uuid.UUID | str, channel_name: str, until: float) -> None:
    redis = async_client()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(_key(conversation_id), {channel_name: until})
        # Closed sockets only matter through the highest score: keep the set small.
        pipe.zremrangebyscore(_key(conversation_id), "-inf", time.time() - KEEP_S)
        pipe.expire(_key(conversation_id), KEEP_S)
        await pipe.execute()


async def renew(conversation_id: uuid.UUID | str, channel_name: str) -> None:
    """A customer socket opened on the conversation, or is still open (a ping)."""
    await _mark(conversation_id, channel_name, time.time() + LAPSE_S)


async def leave(conversation_id: uuid.UUID | str, channel_name: str) -> None:
    await _mark(conversation_id, channel_name, time.time())


def seen_until(conversation_id: uuid.UUID | str) -> float:
    """The last moment (a Unix time) a socket of the customer's was open on the conversation:
    in the future while one is; 0 if none was lately."""
    highest = sync_client().zrange(_key(conversation_id), 0, 0, desc=True, withscores=True)
    return float(highest[0][1]) if highest else 0.0


def has_seen(conversation_id: uuid.UUID | str, sent_at: datetime) -> bool:
    return seen_until(conversation_id) >= sent_at.timestamp()
