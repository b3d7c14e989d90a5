"""Agents' replies by email to customers who are away (docs/email.md).

An agent's reply plans a task EMAIL_REPLY_DELAY_S later (email_later_on_commit). The task
emails, in one message, every agent reply of the conversation that has not been emailed and
that the customer has not seen (customer_presence.py: no socket of theirs was open on the
conversation since it was sent), to the conversation's contact email, else the customer's.
Notes are another model and bot replies another author: neither is ever emailed.

Each reply is emailed at most once: the turns are claimed (emailed_at set by a conditional
UPDATE) before the send. A send that fails (SMTP server down, refusing) gives the claims back
and raises EmailNotSent, and the task tries again later. A worker killed between the claim and
the end of the send loses that email rather than risk sending it twice: the server may have
accepted it, and SMTP has no way to ask. The reply itself is never lost: it stays in the
conversation the link opens.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import get_text_list

from . import customer_presence, links
from .models import Conversation, Turn, staff_name

logger = logging.getLogger(__name__)

# Sent by name: the task module imports this one.
EMAIL_TASK = "conversations.tasks.email_agent_replies"
# Older replies are never emailed (those before this feature, those seen long ago).
WINDOW = timedelta(days=7)


class EmailNotSent(Exception):
    """The SMTP server could not be reached or refused the message; nothing is marked sent."""


def email_later_on_commit(turn: Turn) -> None:
    """After the caller's commit: plan the email of an agent's reply, should the customer
    not see it within EMAIL_REPLY_DELAY_S. A broker that is down only logs: the next reply's
    email carries this one too."""
    if turn.author != Turn.Author.AGENT or not emails_on():
        return
    conversation_id = str(turn.conversation_id)
    transaction.on_commit(
        lambda: current_app.send_task(
            EMAIL_TASK, args=[conversation_id], countdown=settings.EMAIL_REPLY_DELAY_S
        ),
        robust=True,
    )


def emails_on() -> bool:
    """Whether agents' replies are emailed: a delay is set, and there is a way to send (an SMTP
    server, or another backend such as `make run`'s console)."""
    smtp = settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
    return settings.EMAIL_REPLY_DELAY_S > 0 and bool(settings.EMAIL_HOST or not smtp)


def recipient(conversation: Conversation) -> str:
    return conversation.contact_email or conversation.customer.email


def email_unseen_replies(conversation_id: uuid.UUID | str) -> int:
    """Email the agent replies the customer has not seen, not emailed yet, in one message.
    Returns how many were emailed (0: none to send, no address, or all seen)."""
    if not emails_on():  # planned before this process's settings turned them off
        return 0
    conversation = (
        Conversation.objects.select_related("customer").filter(pk=conversation_id).first()
    )
    if conversation is None or not recipient(conversation):
        return 0
    waiting = list(
        Turn.objects.filter(
            conversation=conversation,
            author=Turn.Author.AGENT,
            emailed_at__isnull=True,
            created_at__gte=timezone.now() - WINDOW,
        )
        .select_related("agent")
        .order_by("id")
    )
    if not waiting:
        return 0
    seen_until = customer_presence.seen_until(conversation.pk)
    unseen = [turn for turn in waiting if turn.created_at.timestamp() > seen_until]
    claimed = _claim(unseen)
    if not claimed:
        return 0
    try:
        _message(conversation, claimed).send()
    except Exception as error:
        # Given back, so that the retry (or the next reply's email) sends them.
        stamp = claimed[0].emailed_at
        Turn.objects.filter(pk__in=[t.pk for t in claimed], emailed_at=stamp).update(
            emailed_at=None
        )
        if isinstance(error, OSError):  # smtplib's errors and refused connections are OSErrors
            raise EmailNotSent(str(error)) from error
        raise
    logger.info("conversation %s: %d agent replies emailed", conversation.pk, len(claimed))
    return len(claimed)


def _claim(turns: list[Turn]) -> list[Turn]:
    """The turns this call may email: those no other task claimed first."""
    stamp = timezone.now()
    claimed = []
    with transaction.atomic():
        for turn in turns:
            if Turn.objects.filter(pk=turn.pk, emailed_at__isnull=True).update(emailed_at=stamp):
                turn.emailed_at = stamp
                claimed.append(turn)
    return claimed


def _message(conversation: Conversation, turns: list[Turn]) -> EmailMultiAlternatives:
    replies = [
        {"name": staff_name(turn.agent) or f"{settings.COMPANY_NAME} team", "text": turn.text}
        for turn in turns
    ]
    names = get_text_list(list(dict.fromkeys(r["name"] for r in replies)), "and")
    plural = "replies" if len(replies) > 1 else "reply"
    subject = f"New {plural} from {names} at {settings.COMPANY_NAME}"
    link = links.continue_url(conversation.pk)
    if not link:
        logger.warning("PUBLIC_BASE_URL is not set: emails go without the conversation's link")
    context = {
        "subject": subject,
        "names": names,
        "company_name": settings.COMPANY_NAME,
        "replies": replies,
        "link": link,
        "link_days": settings.EMAIL_LINK_MAX_AGE_DAYS,
    }
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("conversations/email/agent_replies.txt", context),
        to=[recipient(conversation)],
        # Asks auto-responders (out-of-office) not to answer (RFC 3834).
        headers={"Auto-Submitted": "auto-generated"},
    )
    message.attach_alternative(
        render_to_string("conversations/email/agent_replies.html", context), "text/html"
    )
    return message
