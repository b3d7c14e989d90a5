"""A per-process cache of the configuration operators change and the bot reads on every
customer message and reply: escalation rules, business hours, the active prompt version, the
running A/B experiment and model prices. Without it each of those is a query per message.

How it stays correct in every web and worker process:

- One generation counter in Redis (`<REDIS_KEY_PREFIX>config:generation`). A change to a
  configuration row (post_save / post_delete of a watched model, a bulk write through
  ConfigQuerySet, a migration) bumps it once its transaction commits, so no process can reload
  before the change is visible to it.
- A read asks Redis for the generation (one GET) and reloads what it cached under another
  one. The generation is read before the rows, so a change that commits during a reload makes
  the next read reload again.
- Within a unit of work (a Celery task: one reply, one evaluation run; or a `unit_of_work()`
  block) the reads share the first one's GET: a reply's 3-4 reads cost one round trip. A change
  another process announces during the unit applies from the next unit (the next reply), as
  if it had committed a moment later; one this process announces applies at once. A unit asks
  Redis again after UNIT_MAX_S, and before loading anything: a value is always filed under the
  generation read just before it, never under an older one a unit kept.
- The thread whose transaction changed configuration sees rows nobody else sees yet: until the
  commit it reads past the cache, and what it reads is not kept, so a rollback leaves nothing
  behind. (A test runs in a transaction that never commits: its edits apply to its next
  message this way.)
- Redis unreachable: read the database, ask Redis again after REDIS_RETRY_AFTER_S. Cached values
  are never served on an error, and they are dropped, since a change made meanwhile could not
  announce itself. MAX_AGE_S bounds how long a change whose announcement was lost can go unseen.

Cached values are shared by the process's threads: loaders return values nobody changes
(tuples, frozen dataclasses, read-only mappings, model instances treated as read-only).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.signals import post_delete, post_migrate, post_save
from redis.backoff import NoBackoff
from redis.retry import Retry

from .redis_clients import key

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=models.Model)

# A local Redis answers in well under a millisecond; past this the database is the faster way.
REDIS_TIMEOUT_S = 1.0
# After a Redis error, read the database for this long before trying Redis again, so that an
# unreachable Redis costs one timeout every few seconds rather than one per read.
REDIS_RETRY_AFTER_S = 5.0
# A safety net for a change whose bump was lost (Redis unreachable from the process that made
# it when it committed): values older than this are reloaded anyway.
MAX_AGE_S = 60.0
# How long a unit of work may go on with the generation it read first. Long enough for a reply
# (the price is read after the model has streamed its answer), short enough that a long unit
# (an evaluation run is one task) doesn't run on old configuration for minutes.
UNIT_MAX_S = 30.0


def generation_key() -> str:
    return key("config", "generation")


def _first_generation() -> int:
    # A new or flushed Redis starts from a random number, never from one a process may have
    # cached before the flush.
    return secrets.randbits(62)


@dataclass(frozen=True)
class _Entry:
    generation: str
    loaded_at: float
    value: Any


@dataclass(frozen=True)
class _Snapshot:
    """The generation a thread read in a unit of work, for its next reads in that unit."""

    unit: int
    epoch: int
    taken_at: float
    generation: str


class ConfigCache:
    """Values loaded from the database, kept while the Redis generation stays the same."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._redis_url = redis_url  # None: settings.REDIS_URL
        self._redis: redis.Redis | None = None
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._redis_down_until = 0.0
        self._snapshots = threading.local()  # .snapshot: this thread's _Snapshot
        # Ends every snapshot of every thread: a change this process announced, a Redis error.
        self._epoch = 0

    def get(self, name: str, load: Callable[[], T]) -> T:
        """The value `load` returns, loaded again only after a configuration change."""
        if changed_in_this_transaction():
            return load()
        kept = self._kept_generation()
        if kept is not None:
            entry = self._entry(name, kept)
            if entry is not None:
                return cast(T, entry.value)
        # A value is loaded under the generation of now, not the one a unit kept: filed under
        # an older one, it would look stale to every thread that has seen the newer one.
        generation = self._generation()
        if generation is None:
            return load()
        entry = self._entry(name, generation)
        if entry is not None:
            return cast(T, entry.value)
        now = time.monotonic()
        value = load()
        with self._lock:
            self._entries[name] = _Entry(generation, now, value)
        return value

    def _entry(self, name: str, generation: str) -> _Entry | None:
        """The entry cached under this generation, unless it is too old to trust."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or entry.generation != generation:
            return None
        return entry if time.monotonic() - entry.loaded_at < MAX_AGE_S else None

    def _kept_generation(self) -> str | None:
        """The generation this thread read earlier in its current unit of work, if still good."""
        unit = _current_unit()
        snapshot: _Snapshot | None = getattr(self._snapshots, "snapshot", None)
        if unit is None or snapshot is None:
            return None
        if snapshot.unit != unit or snapshot.epoch != self._epoch:
            return None
        if time.monotonic() - snapshot.taken_at >= UNIT_MAX_S:
            return None
        return snapshot.generation

    def bump(self) -> None:
        """Tell every process that configuration changed."""
        if not self._redis_is_down():
            try:
                with self._client().pipeline() as pipe:
                    pipe.set(generation_key(), _first_generation(), nx=True)
                    pipe.incr(generation_key())
                    pipe.execute()
                # After the increment: a thread that read the generation before it must not
                # keep it for the rest of its unit of work.
                self._end_snapshots()
                return
            except redis.RedisError:
                self._redis_failed()
        logger.error(
            "configuration changed but Redis is unreachable: other processes may keep the old "
            "configuration for up to %d s",
            MAX_AGE_S,
        )

    def _generation(self) -> str | None:
        """The current generation, or None when Redis can't say (read the database then); kept
        for the rest of the thread's unit of work, if it is in one."""
        if self._redis_is_down():
            return None
        # Read before the GET: a change this process announces meanwhile ends the snapshot.
        epoch, taken_at = self._epoch, time.monotonic()
        try:
            client = self._client()
            generation = client.get(generation_key())
            if generation is None:
                with client.pipeline() as pipe:
                    pipe.set(generation_key(), _first_generation(), nx=True)
                    pipe.get(generation_key())
                    generation = pipe.execute()[1]
        except redis.RedisError:
            logger.warning(
                "Redis unreachable: reading configuration from the database", exc_info=True
            )
            self._redis_failed()
            return None
        unit = _current_unit()
        if unit is not None:
            self._snapshots.snapshot = _Snapshot(unit, epoch, taken_at, str(generation))
        return str(generation)

    def _end_snapshots(self) -> None:
        with self._lock:
            self._epoch += 1

    def _redis_is_down(self) -> bool:
        return time.monotonic() < self._redis_down_until

    def _redis_failed(self) -> None:
        self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
        with self._lock:
            self._entries.clear()
            self._epoch += 1

    def _client(self) -> redis.Redis:
        # Not conversations.redis_clients.sync_client(): that one retries a refused connection
        # for seconds, while a read here would rather go to the database at once.
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    self._redis_url or settings.REDIS_URL,
                    decode_responses=True,
                    socket_timeout=REDIS_TIMEOUT_S,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                    retry=Retry(NoBackoff(), 0),
                )
            return self._redis


# The process's cache (looked up at each call, so tests can swap it).
cache = ConfigCache()


def cached(load: Callable[[], T]) -> Callable[[], T]:
    """`load` (a query of configuration rows) through the process's cache."""
    name = f"{load.__module__}.{load.__qualname__}"

    @functools.wraps(load)
    def read() -> T:
        return cache.get(name, load)

    return read


# --- Units of work ---------------------------------------------------------------------------

_units = threading.local()  # .stack: the ids of the units this thread is in, innermost last
_unit_ids = itertools.count(1)


def _unit_stack() -> list[int]:
    stack: list[int] | None = getattr(_units, "stack", None)
    if stack is None:
        stack = _units.stack = []
    return stack


def _current_unit() -> int | None:
    stack = _unit_stack()
    return stack[-1] if stack else None


def _begin_unit(**_: Any) -> None:
    _unit_stack().append(next(_unit_ids))


def _end_unit(**_: Any) -> None:
    stack = _unit_stack()
    if stack:
        stack.pop()


@contextlib.contextmanager
def unit_of_work() -> Iterator[None]:
    """The configuration reads in the block share one look at the generation (see the module
    doc). Celery tasks are units of work already."""
    _begin_unit()
    try:
        yield
    finally:
        _end_unit()


# A reply, an evaluation run or a playground reply is one task. The signals are sent in the
# thread that runs the task (threads pool included), and postrun even when the task raised.
task_prerun.connect(_begin_unit, weak=False, dispatch_uid="config_cache.begin_unit")
task_postrun.connect(_end_unit, weak=False, dispatch_uid="config_cache.end_unit")


# --- Announcing changes ----------------------------------------------------------------------


class _BumpAfterCommit:
    """The on-commit callback of a transaction that changed configuration. Django drops it when
    the transaction (or the savepoint it was registered in) rolls back."""

    def __init__(self) -> None:
        self.ran = False

    def __call__(self) -> None:
        self.ran = True
        cache.bump()


def changed_in_this_transaction() -> bool:
    """Whether this thread's open transaction changed configuration not committed yet."""
    # captureOnCommitCallbacks(execute=True) runs callbacks without removing them: hence `ran`.
    callbacks = (entry[1] for entry in connection.run_on_commit)  # (savepoints, callback, ...)
    return any(isinstance(c, _BumpAfterCommit) and not c.ran for c in callbacks)


def config_changed() -> None:
    """Configuration rows changed: every process reloads once this transaction commits (at
    once outside a transaction). One bump a transaction, however many rows."""
    if not changed_in_this_transaction():
        transaction.on_commit(_BumpAfterCommit(), robust=True)


def _on_change(sender: Any, **kwargs: Any) -> None:
    config_changed()


def watch(*config_models: type[models.Model]) -> None:
    """Announce every save and delete of these models (call it from AppConfig.ready)."""
    for model in config_models:
        uid = f"config_cache.{model._meta.label}"
        post_save.connect(_on_change, sender=model, dispatch_uid=f"{uid}.save")
        post_delete.connect(_on_change, sender=model, dispatch_uid=f"{uid}.delete")
    # Data migrations save through historical models, which send no signals to the receivers
    # above, and flush empties tables without any: both end with post_migrate.
    post_migrate.connect(_on_change, dispatch_uid="config_cache.migrate")


class ConfigQuerySet(models.QuerySet[M]):
    """The manager of a configuration model. Bulk writes send no model signals, so they
    announce the change themselves (studio.services activates a version with update())."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        if rows:
            config_changed()
        return rows

    def bulk_create(self, objs: Iterable[M], *args: Any, **kwargs: Any) -> list[M]:
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            config_changed()
        return created
