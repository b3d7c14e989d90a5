"""The Celery app (imported by support_bot/__init__.py, so that tasks use it)."""

import logging
import os
import time

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")

app = Celery("support_bot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)

#: A worker writing this many replies or more leaves customers' questions to their replies.
QUIET_WHILE_WRITING = 4


def _prepare_worker(**_: object) -> None:
    """Before the worker takes its first task: what the embedded default needs (its Redis is
    the broker), then what every reply uses (bot.run.warm_up), so the first question after a
    (re)start doesn't wait for it."""
    # Imported here: this module is imported with the settings, before Django is set up.
    import django
    from django.db import DatabaseError, close_old_connections

    django.setup()
    from bot import run
    from support_bot import local, metrics

    local.prepare()
    metrics.forget_dead_processes()
    metrics.serve_worker_metrics()
    started = time.monotonic()
    try:
        run.warm_up()
    except DatabaseError as exc:  # not migrated yet, or the database is down: the reply retries
        logger.warning("replies not warmed up: %s", exc)
    else:
        logger.info(
            "ready to answer: knowledge index, language identifier and model client loaded "
            "in %.1fs", time.monotonic() - started,
        )
    finally:
        close_old_connections()


worker_init.connect(_prepare_worker, weak=False)


def _keep_reply_leases(**_: object) -> None:
    """Once the worker takes tasks: renew its replies' leases and sweep up replies nobody owns
    (at once, then every second), and embed questions asked ahead."""
    from conversations import recovery
    from knowledge.search import ahead

    recovery.keeper.start()
    # Questions embedded as they arrive while this worker writes few replies: under load the
    # head start only takes CPU from the replies (docs/performance.md).
    ahead.lane.start(busy=lambda: recovery.keeper.holding() >= QUIET_WHILE_WRITING)


def _hand_off_before_the_kill(**_: object) -> None:
    """SIGTERM: Celery stops taking tasks and waits for the running ones; replies that would
    outlast the grace period go to another worker shortly before it ends."""
    from django.conf import settings

    from conversations import recovery

    recovery.keeper.begin_shutdown(settings.WORKER_SHUTDOWN_GRACE_S)


worker_ready.connect(_keep_reply_leases, weak=False)
worker_shutting_down.connect(_hand_off_before_the_kill, weak=False)
