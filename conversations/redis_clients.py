"""Redis connections shared per process (sync) and per event loop (async)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from django.conf import settings

T = TypeVar("T")

_sync_client: redis.Redis | None = None
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


def async_client() -> aioredis.Redis:
    """One client per event loop: redis.asyncio connections can't cross loops."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async_clients.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
            _async_clients[loop] = client
        return client


_thread_state = threading.local()


def run_in_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on this thread's own long-lived event loop.

    Worker threads publish many frames a reply. async_to_sync would start a new loop per call,
    and channels_redis keeps connections per loop, so every frame would open a new Redis
    connection. One loop per thread keeps them open.
    """
    loop = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _thread_state.loop = loop
    return loop.run_until_complete(coro)
