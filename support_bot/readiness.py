"""/readyz: can this process serve customers? The database, Redis and the Celery broker are
each checked at once, each with PROBE_TIMEOUT_S, in threads of their own, so a hung server
costs the check seconds and never holds up the web process's other requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from . import broker

logger = logging.getLogger(__name__)


def check_database() -> None:
    # A connection of its own (from the process's pool, when there is one), closed at once: the
    # check runs in an executor's thread, which must keep nothing between checks.
    database = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with database.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        database.close()


def check_redis() -> None:
    timeout = settings.PROBE_TIMEOUT_S
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    broker.check(settings.PROBE_TIMEOUT_S)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}


async def run_checks() -> dict[str, str]:
    """Each check's result: "ok", or what went wrong in a few words (the details are logged,
    not answered: /readyz is public)."""
    names = list(CHECKS)
    results = await asyncio.gather(*(_run(name, CHECKS[name]) for name in names))
    return dict(zip(names, results, strict=True))


async def _run(name: str, check: Callable[[], None]) -> str:
    timeout = settings.PROBE_TIMEOUT_S
    try:
        # A little longer than the clients' own timeouts, which report more precisely.
        await asyncio.wait_for(sync_to_async(check, thread_sensitive=False)(), timeout + 0.5)
    except TimeoutError:
        logger.warning("readiness: %s did not answer within %ss", name, timeout)
        return f"no answer within {timeout:g} s"
    except Exception as exc:
        logger.warning("readiness: %s failed: %s: %s", name, type(exc).__name__, exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok"
