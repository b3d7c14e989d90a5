"""Who is viewing which conversation, for collision detection ("Dana is viewing"), in Redis.

One sorted set per conversation; each watching socket holds a membership (its user id, socket
and name) scored by when it lapses, renewed with the socket's inbox presence and removed when
it stops watching or closes. A socket whose process died lapses after presence.LAPSE_S.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from support_bot.redis_clients import async_client, key

from . import presence


def _key(conversation_id: uuid.UUID | str) -> str:
    return key("inbox", "viewers", str(conversation_id))


def _member(user_id: int, name: str, channel_name: str) -> str:
    # Deterministic JSON: the same socket removes exactly the member it added.
    return json.dumps([user_id, channel_name, name], separators=(",", ":"))


async def arrive(
    conversation_id: uuid.UUID | str, user_id: int, name: str, channel_name: str
) -> None:
    """A socket started watching (or renews its watch of) the conversation."""
    redis = async_client()
    now = time.time()
    where = _key(conversation_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(where, {_member(user_id, name, channel_name): now + presence.LAPSE_S})
        pipe.zremrangebyscore(where, "-inf", now)
        # The set goes by itself once nobody renews it.
        pipe.expire(where, int(presence.LAPSE_S * 2) + 1)
        await pipe.execute()


renew = arrive


async def leave(
    conversation_id: uuid.UUID | str, user_id: int, name: str, channel_name: str
) -> None:
    await async_client().zrem(_key(conversation_id), _member(user_id, name, channel_name))


async def viewers(conversation_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """The agents (not sockets) viewing it now: [{"id", "name"}], by name."""
    members = await async_client().zrangebyscore(_key(conversation_id), time.time(), "+inf")
    agents: dict[int, str] = {}
    for member in members:
        try:
            user_id, _channel, name = json.loads(str(member))
        except (ValueError, TypeError):
            continue
        agents[int(user_id)] = str(name)
    return [{"id": i, "name": n} for i, n in sorted(agents.items(), key=lambda a: (a[1], a[0]))]
