"""Every queued or streaming reply has a live owner, or gets one within seconds.

The database is the source of truth, not the broker or Redis. A worker process holds a short
lease on each reply it writes and renews it every second (`LeaseKeeper`); a reply whose lease
lapsed (its worker died) or that sat queued too long (its task was lost with the broker's data,
or never sent) is put back in the queue by the sweeper that runs in every worker. On SIGTERM a
worker lets its replies finish until shortly before the grace period ends, then hands the rest
to another worker at once. Duplicate tasks are harmless: a reply is claimed atomically, and a
worker may only store the attempt it claimed (Turn.claim_reply, Turn.finish_reply).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce, Now

from support_bot import metrics
from support_bot.background import BackgroundThread

from .models import Turn

logger = logging.getLogger(__name__)

# Sent by name: the task module imports the reply writer, which imports this module.
REPLY_TASK = "conversations.tasks.generate_reply"


def queue_reply(reply_id: int) -> None:
    """Send the task that writes this reply (after the caller's commit, if in a transaction)."""
    current_app.send_task(REPLY_TASK, args=[reply_id])


@dataclass
class HeldReply:
    """A reply this process writes: the attempt it claimed, and whether it still owns it."""

    reply_id: int
    attempt: int
    lost: threading.Event = field(default_factory=threading.Event)

    @property
    def is_lost(self) -> bool:
        return self.lost.is_set()


class LeaseKeeper(BackgroundThread):
    """One per worker process: renews the leases of the replies its threads write, sweeps up
    replies nobody owns, and hands its own replies off when the worker is told to stop."""

    thread_name = "reply-leases"

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[int, HeldReply] = {}
        self._lock = threading.Lock()
        self._handoff_at: float | None = None  # monotonic time the replies still held go
        # When the sweeper may next run: at once at start (a restarted worker is what finds
        # replies a lost Redis left); a whole lease after a database outage (None meanwhile),
        # so that the other workers renew their leases first.
        self._sweep_from: float | None = 0.0
        self._last_tick_at: float | None = None  # monotonic time the last heartbeat ended

    # --- The replies this process writes ---------------------------------------------------

    @contextmanager
    def hold(self, reply: Turn) -> Iterator[HeldReply]:
        held = HeldReply(reply.pk, reply.attempt)
        with self._lock:
            self._held[reply.pk] = held
        try:
            yield held
        finally:
            with self._lock:
                if self._held.get(reply.pk) is held:
                    del self._held[reply.pk]

    def held(self) -> list[HeldReply]:
        with self._lock:
            return list(self._held.values())

    def holding(self) -> int:
        """How many replies this process is writing now."""
        return len(self._held)

    def renew(self) -> None:
        """Extend the lease of every reply held here; one that another worker claimed since, or
        that the sweeper put back, is marked lost, and its writer stops."""
        held = self.held()
        if not held:
            return
        # By id, with the attempts compared here: a filter OR-ing (id, attempt) pairs took 20 ms
        # of CPU a heartbeat with 100 replies held, this 3 ms.
        rows = {
            pk: (attempt, status)
            for pk, attempt, status in Turn.objects.filter(
                pk__in=[reply.reply_id for reply in held]
            ).values_list("pk", "attempt", "status")
        }
        still_mine: set[int] = set()
        gone: list[HeldReply] = []
        for reply in held:
            attempt, status = rows.get(reply.reply_id, (None, None))
            if attempt != reply.attempt or status == Turn.Status.QUEUED:
                gone.append(reply)  # claimed by another worker, or put back by a sweeper
            elif status == Turn.Status.STREAMING:
                still_mine.add(reply.reply_id)
            # Else finished by this attempt's own writer (only it can: Turn.finish_reply),
            # between hold()'s list and this query: neither renewed nor lost.
        if still_mine:
            # Claimed by another worker in between, a reply's lease is renewed once more by
            # this process: harmless, and found out at the next heartbeat.
            Turn.objects.filter(pk__in=still_mine, status=Turn.Status.STREAMING).update(
                claimed_at=Now()
            )
        for reply in gone:
            if not reply.is_lost:
                reply.lost.set()
                logger.warning("reply %s: lease lost; another worker writes it", reply.reply_id)

    # --- Shutdown ----------------------------------------------------------------------------

    def begin_shutdown(self, grace_s: float) -> None:
        """The worker was asked to stop and has `grace_s` seconds before it is killed: replies
        still streaming shortly before then go to another worker."""
        margin = min(settings.WORKER_HANDOFF_MARGIN_S, grace_s / 2)
        self._handoff_at = time.monotonic() + max(0.0, grace_s - margin)
        logger.info("shutting down: replies still streaming in %.0fs go to another worker",
                    grace_s - margin)  # fmt: skip

    def hand_off_if_due(self) -> int:
        if self._handoff_at is None or time.monotonic() < self._handoff_at:
            return 0
        handed = 0
        for reply in self.held():
            if reply.is_lost:
                continue
            reply.lost.set()  # before the database says so: the writer stops at its next frame
            if requeue(reply.reply_id, attempt=reply.attempt, reason="shutdown"):
                handed += 1
        metrics.record_requeued("shutdown", handed)
        return handed

    # --- The background thread -------------------------------------------------------------

    # start() renews and sweeps in this process (a worker, once it is ready); stop() ends it.

    def _loop(self) -> None:
        own = own_connection()
        if own is not None:
            connections[own.alias] = own  # this thread's, and only this thread's
        try:
            while True:
                self.tick()
                if self._stop.wait(settings.REPLY_HEARTBEAT_S):
                    return
        finally:
            if own is not None:
                own.close()

    def tick(self) -> None:
        """One heartbeat: renew, hand off when due, then sweep. One that takes long enough to
        risk the leases is logged with where its time went (a lapsed lease restarts a reply)."""
        started = time.monotonic()
        connected = started
        if self._last_tick_at is not None:
            late = started - self._last_tick_at - settings.REPLY_HEARTBEAT_S
            if late >= settings.REPLY_LEASE_S / 2:
                # Its thread did not get to run: the process's other threads kept the
                # interpreter (or the machine kept the CPU) busy.
                logger.warning(
                    "reply leases: a heartbeat ran %.1fs later than due; leases lapse after %.0fs",
                    late,
                    settings.REPLY_LEASE_S,
                )
        try:
            if self.held():
                connection.ensure_connection()  # a pooled one may wait (the loop has its own)
            connected = time.monotonic()
            self.renew()
            self.hand_off_if_due()
            now = time.monotonic()
            if self._sweep_from is None:
                self._sweep_from = now + settings.REPLY_LEASE_S
            if self._handoff_at is None and now >= self._sweep_from:
                sweep()
        except DatabaseError as exc:
            self._sweep_from = None
            logger.warning("reply leases: database unreachable (%s); trying again", exc)
        except Exception:  # the heartbeat must outlive anything one tick runs into
            logger.exception("reply leases: unexpected error")
        finally:
            if not connection.in_atomic_block:
                if connection.settings_dict.get("CONN_MAX_AGE") is None:
                    connection.close_if_unusable_or_obsolete()  # the loop's own: kept if usable
                else:
                    connection.close()  # a pooled one goes back
        self._last_tick_at = time.monotonic()
        took = self._last_tick_at - started
        if took >= settings.REPLY_LEASE_S / 2:
            logger.warning(
                "reply leases: a heartbeat took %.1fs (%.1fs waiting for a database connection); "
                "leases lapse after %.0fs",
                took,
                connected - started,
                settings.REPLY_LEASE_S,
            )


def own_connection() -> BaseDatabaseWrapper | None:
    """A connection of the heartbeat's own, outside the pool (None without a pool). Reply
    threads hold pooled connections through their dialogue and knowledge reads, and a pool
    queues its waiters first come, first served: in a cold burst a heartbeat waited 3-6 s for
    one, and leases of 5 s lapsed. One more connection a worker process buys leases that
    renew on time."""
    pooled = connections["default"]
    options = pooled.settings_dict.get("OPTIONS") or {}
    if not options.get("pool"):
        return None
    own_settings = copy.copy(pooled.settings_dict)
    own_settings["OPTIONS"] = {key: value for key, value in options.items() if key != "pool"}
    own_settings["CONN_MAX_AGE"] = None  # kept open between heartbeats
    return type(pooled)(own_settings, pooled.alias)


def requeue(reply_id: int, *, attempt: int | None = None, reason: str) -> bool:
    """Put a streaming reply back in the queue (if it is still in the attempt given) and send its
    task. Only one caller wins: the status change fences the writer it is taken from."""
    taken = Turn.objects.filter(status=Turn.Status.STREAMING)
    if attempt is not None:
        taken = taken.filter(attempt=attempt)
    if not _put_back(taken, reply_id):
        return False
    logger.info("reply %s re-queued (%s)", reply_id, reason)
    return True


def _put_back(streaming: QuerySet[Turn], reply_id: int) -> bool:
    if not streaming.filter(pk=reply_id).update(
        status=Turn.Status.QUEUED, claimed_at=Now()
    ):
        return False
    queue_reply(reply_id)
    return True


@dataclass(frozen=True)
class Swept:
    lapsed: int = 0
    stuck: int = 0


def sweep(limit: int = 200) -> Swept:
    """Re-queue the replies nobody owns: streaming with a lapsed lease (their worker died), and
    queued for longer than any healthy queue takes (their task was lost or never sent).
    Workers sweep concurrently; each reply is re-queued by one of them."""
    # The database's clock, as the claims and renewals that date the leases use.
    lapsed_leases = Turn.objects.filter(
        status=Turn.Status.STREAMING,
        claimed_at__lt=Now() - timedelta(seconds=settings.REPLY_LEASE_S),
    )
    lapsed_ids = list(lapsed_leases.values_list("pk", flat=True)[:limit])
    # Conditional, so that of the workers sweeping at once only one re-queues each.
    lapsed = sum(_put_back(lapsed_leases, reply_id) for reply_id in lapsed_ids)
    stuck_before = Now() - timedelta(seconds=settings.REPLY_REQUEUE_AFTER_S)
    # claimed_at of a queued reply is when it was last (re-)queued by a sweeper.
    not_requeued_since = Q(claimed_at__isnull=True) | Q(claimed_at__lt=stuck_before)
    stuck_replies = Turn.objects.filter(
        not_requeued_since, status=Turn.Status.QUEUED, author=Turn.Author.BOT
    )
    stuck_ids = list(
        stuck_replies.annotate(queued_at=Coalesce("claimed_at", "created_at"))
        .filter(queued_at__lt=stuck_before)
        .values_list("pk", flat=True)[:limit]
    )
    stuck = 0
    for reply_id in stuck_ids:
        if stuck_replies.filter(pk=reply_id).update(claimed_at=Now()):
            queue_reply(reply_id)
            stuck += 1
    metrics.record_requeued("lease_lapsed", lapsed)
    metrics.record_requeued("task_lost", stuck)
    if lapsed or stuck:
        logger.warning(
            "sweeper re-queued %d replies whose worker was lost and %d whose task was lost",
            lapsed,
            stuck,
        )
    return Swept(lapsed=lapsed, stuck=stuck)


# The worker process's keeper (support_bot/celery.py starts it when the worker is ready).
keeper = LeaseKeeper()
