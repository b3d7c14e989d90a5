"""Celery tasks: take ids, guard, call one service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from . import services

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=10,
    time_limit=settings.REPLY_DEADLINE_S + 60,
)
def generate_reply(self: Task, reply_id: int) -> None:
    try:
        services.write_reply(reply_id)
    except services.ReplyBusy as busy:
        # Another worker holds the lease: look again when it would have expired.
        raise self.retry(countdown=busy.retry_in) from None
    except Exception:
        logger.exception("reply %s crashed", reply_id)
        services.fail_reply_after_crash(reply_id)
