"""What the embedded default needs on this machine before a process uses it: the var folder
(SQLite's database file) and the embedded Redis. The entry points call prepare() (manage.py,
the launcher, the ASGI and Celery apps, the test set-up), never the settings module.

The web server also checks what it cannot do without (check_static_files)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from support_bot import embedded_redis


def prepare() -> None:
    if settings.USES_SQLITE:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    if settings.EMBEDDED_REDIS_DIR is not None:
        embedded_redis.ensure_running(settings.EMBEDDED_REDIS_DIR)


def check_static_files() -> None:
    """Production serves hashed static files listed in STATIC_ROOT's manifest, which
    `collectstatic` writes; without it every page would be a 500 ("Missing staticfiles
    manifest entry"). So the web server does not start without it."""
    if settings.STATIC_FROM_FINDERS:
        return
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if not manifest.exists():
        raise ImproperlyConfigured(
            f"No collected static files in {settings.STATIC_ROOT} (DEBUG=0 serves them from "
            "there). Run `python manage.py collectstatic --noinput` first (make run and the "
            "Docker image do), or set STATIC_FROM_FINDERS=1 to serve them from the source."
        )
