"""What the embedded default needs on this machine before a process uses it: the var folder
(SQLite's database file) and the embedded Redis. The entry points call prepare() (manage.py,
the launcher, the ASGI and Celery apps, the test set-up), never the settings module."""

from __future__ import annotations

from django.conf import settings

from support_bot import embedded_redis


def prepare() -> None:
    if settings.USES_SQLITE:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    if settings.EMBEDDED_REDIS_DIR is not None:
        embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)
