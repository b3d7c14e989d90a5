"""The link in an email that continues a conversation: /chat/continue/<token>/.

The token is the conversation's id, signed with a timestamp (django.core.signing, its own
salt). It is a bearer credential: whoever opens it becomes that conversation's customer in
that browser (their visitor cookie), so it names one conversation, expires after
EMAIL_LINK_MAX_AGE_DAYS, and is never logged (docs/email.md).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .models import Conversation

_SALT = "support-bot.continue-link"


class LinkRefused(Exception):
    """The link can't open a conversation; `title` and `message` for the page that says so."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_SALT)


def continue_url(conversation_id: uuid.UUID) -> str:
    """The absolute link (PUBLIC_BASE_URL); "" when no public address is configured."""
    if not settings.PUBLIC_BASE_URL:
        return ""
    token = _signer().sign(conversation_id.hex)
    return settings.PUBLIC_BASE_URL + reverse("chat-continue", args=[token])


def conversation_from_token(token: str) -> Conversation:
    try:
        value = _signer().unsign(token, max_age=timedelta(days=settings.EMAIL_LINK_MAX_AGE_DAYS))
        conversation_id = uuid.UUID(hex=value)
    except signing.SignatureExpired:
        raise LinkRefused(
            410,
            "This link has expired",
            "Links in our emails open the conversation for "
            f"{settings.EMAIL_LINK_MAX_AGE_DAYS} days. Start a new conversation and we'll "
            "gladly help again.",
        ) from None
    except (signing.BadSignature, ValueError):
        raise LinkRefused(
            400,
            "This link is not valid",
            "The link may have been cut short or changed. Open it again from our email, "
            "copying all of it.",
        ) from None
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        raise LinkRefused(
            404,
            "This conversation no longer exists",
            "It may have been deleted. Start a new conversation and we'll gladly help again.",
        )
    return conversation
