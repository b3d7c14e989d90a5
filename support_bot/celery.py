import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")

app = Celery("support_bot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _warm_up_retrieval(**_: object) -> None:
    """Load the embedding model and build the knowledge index before the first reply, so the
    first customer after a (re)start doesn't wait for them."""
    import logging

    from django.db import DatabaseError, close_old_connections

    from knowledge import retrieval

    try:
        retrieval.knowledge_index.get()
    except DatabaseError as exc:  # not migrated yet, or the database is down: the reply retries
        logging.getLogger(__name__).warning("knowledge index not warmed up: %s", exc)
    finally:
        close_old_connections()


worker_ready.connect(_warm_up_retrieval, weak=False)
