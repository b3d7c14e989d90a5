"""The address the team answers at, asked for outside business hours."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from bot.wording import wording_for

from . import events, selectors
from .errors import CustomerRequestRefused
from .models import Conversation, Turn
from .state import conversation_changed

EMAIL_MAX_CHARS = 254


def validated_email(email: object) -> str:
    if not isinstance(email, str) or not email.strip():
        raise CustomerRequestRefused("bad_email", "Please enter your email address.")
    email = email.strip()
    try:
        if len(email) > EMAIL_MAX_CHARS:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError:
        raise CustomerRequestRefused(
            "bad_email", "That doesn't look like an email address. Please check it."
        ) from None
    return email


def save_contact_email(conversation: Conversation, email: object) -> str:
    """Store the address the team answers at (asked for outside business hours). Returns it."""
    email = validated_email(email)
    with transaction.atomic():
        changed = (
            Conversation.objects.filter(pk=conversation.pk)
            .exclude(contact_email=email)
            .update(contact_email=email, updated_at=timezone.now())
        )
        if changed:
            conversation.contact_email = email
            wording = wording_for(selectors.customer_language(conversation.pk))
            notice = Turn.objects.create(
                conversation_id=conversation.pk,
                author=Turn.Author.SYSTEM,
                text=wording.email_saved.format(email=email),
            )
            events.send_turn_on_commit(notice)
            conversation_changed(conversation.pk)
    return email
