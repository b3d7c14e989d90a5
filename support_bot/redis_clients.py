"""Redis connections shared per process (sync) and per event loop (async)."""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

_sync_client: redis.Redis | None = None
_sync_bytes_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def key(*parts: object) -> str:
    return settings.REDIS_KEY_PREFIX + ":".join(str(p) for p in parts)


def sync_client() -> redis.Redis:
    global _sync_client
    with _lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        return _sync_client


def sync_bytes_client() -> redis.Redis:
    """As sync_client, for values that are bytes, not text (a question's vector)."""
    global _sync_bytes_client
    with _lock:
        if _sync_bytes_client is None:
            _sync_bytes_client = redis.Redis.from_url(settings.REDIS_URL)
        return _sync_bytes_client


def async_client() -> aioredis.Redis:
    """One client per event loop: redis.asyncio connections can't cross loops."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async_clients.get(loop)
        if client is None:
            # Waits for a free connection under a burst instead of failing the message.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, decode_responses=True, max_connections=200, timeout=10
            )
            client = aioredis.Redis(connection_pool=pool)
            _async_clients[loop] = client
        return client
