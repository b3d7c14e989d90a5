"""Which agents have the inbox open, in Redis, for every process to read.

Each inbox socket holds a membership ("<user id>:<channel name>") in one sorted set, scored by
when it lapses; the socket renews it while open and removes it on close, and a socket whose
process died simply lapses. What it is for: an inbox row is built (one heavy query) and sent
only when some agent could receive it, so a customer message costs no inbox work while nobody
works the inbox. It lives in conversations/ (the inbox writes it, on its sockets) because the
customer's side reads it too: whether the team is online (conversations/availability.py).

An agent can set themselves away (a Redis set, no TTL: it holds until they come back): an away
agent still receives the inbox, but no longer counts as the team being online for customers.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from support_bot.redis_clients import async_client, key, sync_client

# A membership lapses this long after its last renewal; sockets renew it every RENEW_S.
LAPSE_S = 60.0
RENEW_S = 20.0
# A process that saw an agent present trusts it this long: an extra inbox row costs nothing
# wrong. Absence is never cached: a row missed while an agent connects would be a stale inbox.
PRESENT_TRUSTED_S = 5.0

_present_until = 0.0


def _key() -> str:
    return key("inbox", "present")


def _away_key() -> str:
    return key("inbox", "away")


def _member(user_id: int, channel_name: str) -> str:
    return f"{user_id}:{channel_name}"


async def arrive(user_id: int, channel_name: str) -> None:
    """An inbox socket opened (call before it reads the list: a row committed after this is
    sent to it, one committed before is in the list it reads)."""
    await renew(user_id, channel_name)


async def renew(user_id: int, channel_name: str) -> None:
    redis = async_client()
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(_key(), {_member(user_id, channel_name): now + LAPSE_S})
        pipe.zremrangebyscore(_key(), "-inf", now)
        await pipe.execute()


async def leave(user_id: int, channel_name: str) -> None:
    await async_client().zrem(_key(), _member(user_id, channel_name))


def anyone_present() -> bool:
    """Whether some agent has the inbox open; True when Redis can't tell (sending a row to
    nobody is harmless, and the send needs Redis anyway)."""
    global _present_until
    now = time.monotonic()
    if now < _present_until:
        return True
    try:
        present = sync_client().zcount(_key(), time.time(), "+inf") > 0
    except RedisError:
        return True
    if present:
        _present_until = now + PRESENT_TRUSTED_S
    return bool(present)


def agents_online() -> int:
    """How many agents (not sockets) have the inbox open."""
    members = sync_client().zrangebyscore(_key(), time.time(), "+inf")
    return len({str(member).split(":", 1)[0] for member in members})


def team_online() -> bool:
    """Whether some agent who is not away has the inbox open, for what the customer is told
    ("Our team is online"); False when Redis can't tell, so business hours decide. Never
    cached: the first agent to arrive shows on the customer's page at its next look."""
    try:
        redis = sync_client()
        members = redis.zrangebyscore(_key(), time.time(), "+inf")
        if not members:
            return False
        away = redis.smembers(_away_key())
    except RedisError:
        return False
    present = {str(member).split(":", 1)[0] for member in members}
    return bool(present - {str(user_id) for user_id in away})


def set_away(user_id: int, away: bool) -> None:
    """Mark an agent away (or available again); kept until they change it."""
    redis = sync_client()
    if away:
        redis.sadd(_away_key(), str(user_id))
    else:
        redis.srem(_away_key(), str(user_id))


def is_away(user_id: int) -> bool:
    """Whether the agent set themselves away; False when Redis can't tell."""
    try:
        return bool(sync_client().sismember(_away_key(), str(user_id)))
    except RedisError:
        return False


def forget_cached_presence() -> None:
    """For tests: the next anyone_present() asks Redis."""
    global _present_until
    _present_until = 0.0
