"""Celery tasks: take ids, guard, call one service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from support_bot import metrics

from . import replies

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
        replies.write_reply(reply_id)
    except replies.ReplyBusy as busy:
        # Another worker holds the lease: look again when it would have expired.
        raise self.retry(countdown=busy.retry_in) from None
    except (DatabaseError, RedisError) as outage:
        # The database or Redis is unreachable, so neither a reply nor an apology can be
        # stored or sent now. Try again; the reply's lease stops two workers writing it.
        logger.warning("reply %s: infrastructure error (%s); retrying", reply_id, outage)
        metrics.infrastructure_retry(outage)
        raise self.retry(countdown=5, exc=outage) from None
    except Exception:
        logger.exception("reply %s crashed", reply_id)
        replies.fail_reply_after_crash(reply_id)
