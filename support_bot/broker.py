"""The Celery broker seen from outside Celery, for the readiness check and the queue depths: a
short-lived kombu connection with short timeouts. One code path for Redis (`redis://`,
`redis+socket://`) and RabbitMQ (`amqp://`): kombu's queue_declare counts the waiting
messages on both (on Redis it sums the queue's priority lists under the key prefix)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from django.conf import settings
from kombu.connection import Connection
from kombu.exceptions import ChannelError, OperationalError
from redis.exceptions import RedisError

#: What sending a task raises when the broker can't take it (kombu wraps most connection
#: errors in OperationalError; a Redis broker can also raise its own).
BROKER_DOWN: tuple[type[Exception], ...] = (OperationalError, OSError, RedisError)


def connection(timeout: float) -> Connection:
    """A connection like Celery's (same URL and transport options, so the same key prefix),
    that gives up after `timeout` seconds instead of retrying."""
    options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        # Redis's socket timeouts; py-amqp's read and write timeouts.
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "read_timeout": timeout,
        "write_timeout": timeout,
    }
    return Connection(  # type: ignore[no-untyped-call]
        settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
    )


def check(timeout: float) -> None:
    """Raise unless the broker answers within `timeout` seconds."""
    with connection(timeout) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        # Opening a channel is a round trip (a PING on Redis, channel.open on RabbitMQ).
        conn.channel().close()  # type: ignore[no-untyped-call]


def queue_depths(queues: Iterable[str], conn: Connection) -> dict[str, int]:
    """How many messages wait in each queue; a queue the broker doesn't know (no worker has
    declared it yet, or Redis dropped the empty list) holds none."""
    # Passive on RabbitMQ, which would create a missing queue with other arguments than
    # Celery's. On Redis a declare creates nothing, and kombu's passive check there looks for
    # the key without its global_keyprefix (so never finds it).
    passive = conn.transport.driver_type == "amqp"
    depths: dict[str, int] = {}
    for queue in queues:
        channel = conn.channel()  # type: ignore[no-untyped-call]
        try:
            depths[queue] = channel.queue_declare(queue=queue, passive=passive).message_count
        except ChannelError:
            depths[queue] = 0
        finally:
            # RabbitMQ has already closed a channel whose passive declare failed.
            with contextlib.suppress(Exception):
                channel.close()
    return depths
