"""Celery tasks of the prompt studio: take ids, guard, call one service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.db import DatabaseError
from redis.exceptions import RedisError

from . import evaluation, playground

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=5,
)
def run_evaluation(self: Task, run_id: int) -> None:
    """Run a version over a test set. Redelivered or retried, it skips the cases done."""
    try:
        evaluation.execute_run(run_id)
    except (DatabaseError, RedisError) as outage:
        logger.warning("evaluation run %s: infrastructure error (%s); retrying", run_id, outage)
        raise self.retry(countdown=5, exc=outage) from None


@shared_task(ignore_result=True, acks_late=False, time_limit=300)
def playground_reply(
    request_id: str, version_id: int, conversation_id: str | None, message: str
) -> None:
    """One playground reply, streamed to the asking socket only; never retried (the
    operator presses Send again)."""
    try:
        playground.run_playground(request_id, version_id, conversation_id, message)
    except Exception:
        logger.exception("playground request %s crashed", request_id)
