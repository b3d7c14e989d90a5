"""Agents edit a customer's contact details from the context panel (docs/inbox.md#context).

An identified user's name and email come from the host site too: the next `identify` that
names them wins, as the site is their source (conversations/identity.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from conversations.contact import EMAIL_MAX_CHARS, validated_email
from conversations.errors import CustomerRequestRefused
from conversations.models import Conversation, Customer

from . import events
from .services import Invalid, get_conversation

NAME_MAX_CHARS = Customer._meta.get_field("display_name").max_length or 200
# The other conversations whose inbox rows change with the label: those still being worked.
_ROWS_UPDATED = 50


class TooLong(Invalid):
    code = "too_long"


class BadEmail(Invalid):
    code = "bad_email"


def _clean_name(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("`name` must be text.")
    name = " ".join(value.split())  # no line breaks or runs of spaces in a label
    if len(name) > NAME_MAX_CHARS:
        raise TooLong(f"The name is longer than {NAME_MAX_CHARS} characters.")
    return name


def _clean_email(value: object) -> str:
    if not isinstance(value, str):
        raise BadEmail("`email` must be text.")
    if not value.strip():
        return ""  # cleared
    if len(value.strip()) > EMAIL_MAX_CHARS:
        raise TooLong(f"The email address is longer than {EMAIL_MAX_CHARS} characters.")
    try:
        return validated_email(value)
    except CustomerRequestRefused:
        raise BadEmail("That is not an email address.") from None


def update_contact(conversation_id: uuid.UUID | str, given: dict[str, Any]) -> Customer:
    """Set the conversation's customer's `name` and/or `email` (either may be left out; "" for
    email clears it). Everything is checked before anything is stored; the inbox rows of
    the customer's conversations show the new label on commit."""
    changes: dict[str, str] = {}
    if "name" in given:
        changes["display_name"] = _clean_name(given["name"])
    if "email" in given:
        changes["email"] = _clean_email(given["email"])
    if not changes:
        raise Invalid("Give a `name` or an `email`.")
    with transaction.atomic():
        conversation = get_conversation(conversation_id, "customer")
        customer = conversation.customer
        Customer.objects.filter(pk=customer.pk).update(**changes)
        for name, value in changes.items():
            setattr(customer, name, value)
        affected = list(
            Conversation.objects.filter(customer_id=customer.pk)
            .exclude(pk=conversation.pk)
            .exclude(status=Conversation.Status.RESOLVED)
            .order_by("-created_at")
            .values_list("pk", flat=True)[:_ROWS_UPDATED]
        )
        for pk in [conversation.pk, *affected]:
            events.notify_inbox_on_commit(pk)
    return customer
