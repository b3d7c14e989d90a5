"""Prometheus metrics (prometheus_client): what the code records, in small functions it calls
in one line, and how each kind of process is scraped (docs/operations.md, "Metrics").

- Web (uvicorn, several processes on one port): with PROMETHEUS_MULTIPROC_DIR set, every
  process writes its values to files there and /metrics (support_bot/views.py) adds them up,
  whichever process answers; without it, /metrics shows the one process that answers.
- Celery workers (other containers): each serves its own values on METRICS_PORT. On one host
  they may share the web's PROMETHEUS_MULTIPROC_DIR instead, and /metrics shows them too.
- The queue depths are read from the broker at scrape time, by /metrics only.
"""

from __future__ import annotations

import glob
import hmac
import logging
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from . import broker

logger = logging.getLogger(__name__)

# The queues whose depth /metrics reports (support_bot/processes.py REPLY_QUEUES).
QUEUES = ("replies", "default")

REPLIES = Counter(
    "supportbot_replies",
    "Bot replies that ended, by status (done, failed, withdrawn), error code ('' for none; "
    "taken_over: a person took the conversation mid-reply) and whether the bot abstained.",
    ["status", "error_code", "abstained"],
)
FIRST_TOKEN = Histogram(
    "supportbot_reply_first_token_seconds",
    "From the customer's message to the first text of the reply.",
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60, 120),
)
DURATION = Histogram(
    "supportbot_reply_duration_seconds",
    "From the customer's message to the end of the reply, by status.",
    ["status"],
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300),
)
IN_FLIGHT = Gauge(
    "supportbot_replies_in_flight",
    "Replies being written now.",
    multiprocess_mode="livesum",
)
OPEN_SOCKETS = Gauge(
    "supportbot_open_sockets",
    "Open websockets, by kind (chat, inbox, studio).",
    ["kind"],
    multiprocess_mode="livesum",
)
RETRIES = Counter(
    "supportbot_reply_retries",
    "Replies tried again, by kind: provider (cause: the model's error code) or infrastructure "
    "(cause: database or redis, the task retried).",
    ["kind", "cause"],
)
HEDGES = Counter(
    "supportbot_model_hedges",
    "Requests sent to the model beside one that had not started answering (hedge.py).",
)
BUDGET_WAITS = Histogram(
    "supportbot_model_budget_wait_seconds",
    "How long a model request waited for its turn in the account's budget (0: none).",
    buckets=(0, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
)
BUDGET_EVENTS = Counter(
    "supportbot_model_budget_events",
    "The model's budget: pushed_back (a 429 paused it for every process), refused (no turn "
    "before the reply's deadline), unavailable (Redis unreachable: the request went unmetered).",
    ["event"],
)
REQUEUED = Counter(
    "supportbot_replies_requeued",
    "Replies queued again because their worker was lost, by reason.",
    ["reason"],
)


class FinishedReply(Protocol):
    """What reply_finished reads of a reply (conversations.models.Turn) once it is stored."""

    status: str
    error_code: str
    abstained: bool
    first_token_ms: int | None
    duration_ms: int | None


# --- What the code records -------------------------------------------------------------------


def reply_finished(reply: FinishedReply) -> None:
    """A reply's outcome was stored (call it once, when finish_reply succeeded)."""
    REPLIES.labels(
        status=reply.status, error_code=reply.error_code, abstained=str(reply.abstained).lower()
    ).inc()
    if reply.first_token_ms is not None:
        FIRST_TOKEN.observe(reply.first_token_ms / 1000)
    if reply.duration_ms is not None:
        DURATION.labels(status=reply.status).observe(reply.duration_ms / 1000)


def reply_in_flight() -> AbstractContextManager[object]:
    """Around writing one reply."""
    return IN_FLIGHT.track_inprogress()


def provider_retry(code: str) -> None:
    """The model failed with `code` and the reply tries again."""
    RETRIES.labels(kind="provider", cause=code).inc()


def provider_hedged() -> None:
    """The model was asked again beside a request that had not started answering."""
    HEDGES.inc()


def model_budget_waited(seconds: float) -> None:
    """A model request got its turn in the budget after `seconds`."""
    BUDGET_WAITS.observe(max(0.0, seconds))


def model_budget_event(event: str) -> None:
    """pushed_back, refused or unavailable (bot/providers/budget.py)."""
    BUDGET_EVENTS.labels(event=event).inc()


def infrastructure_retry(outage: Exception) -> None:
    """The database or Redis was unreachable and the reply's task will run again."""
    if isinstance(outage, DatabaseError):
        cause = "database"
    elif isinstance(outage, RedisError):
        cause = "redis"
    else:
        cause = "other"
    RETRIES.labels(kind="infrastructure", cause=cause).inc()


def socket_opened(kind: str) -> None:
    OPEN_SOCKETS.labels(kind=kind).inc()


def socket_closed(kind: str) -> None:
    OPEN_SOCKETS.labels(kind=kind).dec()


def record_requeued(reason: str, n: int) -> None:
    """`n` replies queued again (reason: lease_lapsed, task_lost, shutdown; recovery.py)."""
    if n > 0:
        REQUEUED.labels(reason=reason).inc(n)


# --- Queue depths, read at scrape time -------------------------------------------------------


class QueueDepthCollector:
    """supportbot_queue_messages{queue}: messages waiting in the broker, read when scraped.
    A broker that doesn't answer in time gives no sample (and a log line), never a failed
    scrape: /readyz is what reports it."""

    def __init__(self, queues: tuple[str, ...] = QUEUES) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        try:
            with broker.connection(settings.PROBE_TIMEOUT_S) as conn:
                depths = broker.queue_depths(self.queues, conn)
        except Exception as exc:  # any broker failure: no sample this time
            logger.warning("queue depths not read: %s: %s", type(exc).__name__, exc)
            return
        family = GaugeMetricFamily(
            "supportbot_queue_messages", "Messages waiting in a broker queue.", labels=["queue"]
        )
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


# --- Exposition ------------------------------------------------------------------------------


def multiprocess_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR: read by prometheus_client itself when it is imported."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def _web_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)  # type: ignore[arg-type]  # a registry is a collector
    registry.register(QueueDepthCollector())
    return registry


_web_registry_instance: CollectorRegistry | None = None


def web_exposition() -> tuple[bytes, str]:
    """/metrics: the body and its content type."""
    global _web_registry_instance
    if _web_registry_instance is None:
        _web_registry_instance = _web_registry()
    return generate_latest(_web_registry_instance), CONTENT_TYPE_LATEST


def token_matches(authorization: str) -> bool:
    """Whether an Authorization header carries METRICS_TOKEN as its bearer token (never, while
    METRICS_TOKEN is unset)."""
    expected = settings.METRICS_TOKEN
    scheme, _, given = authorization.partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def serve_worker_metrics() -> None:
    """A Celery worker's own /metrics on METRICS_HOST:METRICS_PORT (unset: none), in a thread.
    Not behind the token: publish the port to nobody (docker-compose.yml doesn't)."""
    if settings.METRICS_PORT:
        start_http_server(settings.METRICS_PORT, addr=settings.METRICS_HOST)
        logger.info("metrics on %s:%s", settings.METRICS_HOST, settings.METRICS_PORT)


def forget_dead_processes() -> None:
    """At a process's start, in multiprocess mode: drop the live gauges (open sockets, replies
    in flight) of processes that died without saying so (kill -9; uvicorn starts a new one),
    so they don't count for ever. Their counters stay: counters never go down."""
    directory = multiprocess_dir()
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        found = re.search(r"_(\d+)\.db$", path)
        if found and not _alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
