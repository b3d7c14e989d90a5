"""Celery tasks: take ids, guard, call one service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from support_bot import metrics
from support_bot.broker import BROKER_DOWN

from . import email_replies, replies

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
    except (DatabaseError, RedisError) as outage:
        # The database or Redis is unreachable, so neither a reply nor an apology can be
        # stored or sent now. Try again soon; should the broker be down too, the sweeper in
        # every worker re-queues the reply once the database answers (recovery.py).
        logger.warning("reply %s: infrastructure error (%s); retrying", reply_id, outage)
        metrics.infrastructure_retry(outage)
        try:
            raise self.retry(countdown=2, exc=outage)
        except BROKER_DOWN as broker_down:
            logger.warning("reply %s: retry not queued (%s); the sweeper will", reply_id,
                           broker_down)  # fmt: skip
    except Exception:
        logger.exception("reply %s crashed", reply_id)
        replies.fail_reply_after_crash(reply_id)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=settings.EMAIL_MAX_RETRIES,
)
def email_agent_replies(self: Task, conversation_id: str) -> None:
    try:
        email_replies.email_unseen_replies(conversation_id)
    except (email_replies.EmailNotSent, DatabaseError, RedisError) as error:
        # Nothing was marked sent: try again later, backing off up to an hour. After the last
        # try the replies stay unsent; the next agent reply's email carries them.
        countdown = min(settings.EMAIL_RETRY_S * 2**self.request.retries, 3600)
        logger.warning("email of conversation %s not sent (%s); retrying in %ss",
                       conversation_id, error, countdown)  # fmt: skip
        raise self.retry(countdown=countdown, exc=error) from None
