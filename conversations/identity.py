"""Signed-in users of the host site, identified by the widget (identity verification, as in
Intercom): the host page names its user (`SupportBot('identify', {id, name, email, user_hash})`)
and the widget's socket presents that claim in its auth frame. `user_hash` is the hex
HMAC-SHA256 of the user id under WIDGET_IDENTITY_SECRET, which only the host site's server and
this install know, so a page cannot claim to be someone else. Unset, nobody is identified.

A verified user is one Customer (its `external_id`), on every browser and device: the socket
answers with a token for that Customer. The anonymous visitor who was chatting before is merged
into it (their conversations move, their row goes), once and atomically. A claim refused (no
secret, a wrong hash, bad input) stores nothing and leaves the visitor anonymous: the error is
logged and returned as a code in the session frame, for the site's developer, never shown in
the chat. See docs/widget.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from . import services, state
from .contact import validated_email
from .errors import CustomerRequestRefused
from .models import Conversation, Customer
from .protocol import is_utf8

logger = logging.getLogger(__name__)

EXTERNAL_ID_MAX_CHARS = Customer._meta.get_field("external_id").max_length or 255
NAME_MAX_CHARS = Customer._meta.get_field("display_name").max_length or 200
_HASH_CHARS = 64  # hex SHA-256
# `attributes`: a flat object the team reads in the context panel, kept small.
ATTRIBUTES_MAX_KEYS = 20
ATTRIBUTE_KEY_MAX_CHARS = 64
ATTRIBUTE_VALUE_MAX_CHARS = 500


class IdentityRefused(CustomerRequestRefused):
    """An identify claim not taken: `identity_not_configured`, `bad_identity` or
    `bad_user_hash`."""


@dataclass(frozen=True)
class Claim:
    external_id: str
    name: str
    email: str
    user_hash: str
    # None: the page gave none (those stored are kept); else they replace those stored.
    attributes: dict[str, str | int | float | bool] | None = None


@dataclass(frozen=True)
class Identified:
    """Who the widget's visitor is after an identify claim: `customer_id` (the identified
    Customer, or an anonymous visitor when `error` says why not), and the conversations merged
    into it from the anonymous visitor."""

    customer_id: uuid.UUID
    merged: tuple[uuid.UUID, ...] = ()
    error: IdentityRefused | None = None

    def conversation_to_open(self, visitor_id: uuid.UUID, requested: str) -> str:
        """The conversation the socket asked for, if the visitor may still open it ("" for
        their current one): a previous visitor's only when it was merged in."""
        if self.customer_id == visitor_id or requested in {str(pk) for pk in self.merged}:
            return requested
        return ""

    def session_fields(self) -> dict[str, Any]:
        """What the socket's session frame says about the claim."""
        if self.error is None:
            return {"identified": True}
        return {
            "identified": False,
            "identity_error": {"code": self.error.code, "message": self.error.message},
        }


def user_hash(external_id: str, secret: str | None = None) -> str:
    """The user_hash the host site's server computes for a user id (and tests)."""
    key = (secret if secret is not None else settings.WIDGET_IDENTITY_SECRET).encode()
    return hmac.new(key, external_id.encode(), hashlib.sha256).hexdigest()


def _text(raw: dict[str, Any], name: str, max_chars: int, *, required: bool) -> str:
    value = raw.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not is_utf8(value) or (required and not value):
        raise IdentityRefused("bad_identity", f"identify: `{name}` must be a non-empty string.")
    if len(value) > max_chars:
        raise IdentityRefused(
            "bad_identity", f"identify: `{name}` is longer than {max_chars} characters."
        )
    return value


def parse_claim(raw: object) -> Claim:
    """The claim as the widget sent it (`{id, name?, email?, user_hash}`), checked; raises
    IdentityRefused. The id is taken exactly as given: it is what the hash signs."""
    if not settings.WIDGET_IDENTITY_SECRET:
        raise IdentityRefused(
            "identity_not_configured",
            "identify: this Support Bot has no WIDGET_IDENTITY_SECRET; nobody is identified.",
        )
    if not isinstance(raw, dict):
        raise IdentityRefused("bad_identity", "identify: give an object {id, user_hash}.")
    external_id = _text(raw, "id", EXTERNAL_ID_MAX_CHARS, required=True)
    name = _text(raw, "name", NAME_MAX_CHARS, required=False).strip()
    email = raw.get("email")
    if email is not None and email != "":
        try:
            email = validated_email(email)
        except CustomerRequestRefused:
            raise IdentityRefused(
                "bad_identity", "identify: `email` is no email address."
            ) from None
    given_hash = raw.get("user_hash")
    if not isinstance(given_hash, str) or len(given_hash) != _HASH_CHARS:
        raise IdentityRefused("bad_user_hash", "identify: `user_hash` is missing or malformed.")
    attributes = parse_attributes(raw.get("attributes"))
    return Claim(external_id, name, email or "", given_hash.lower(), attributes)


def parse_attributes(raw: object) -> dict[str, str | int | float | bool] | None:
    """The claim's optional `attributes`: at most ATTRIBUTES_MAX_KEYS names, each a string,
    number or boolean (long strings clipped). Anything else refuses the claim (bad_identity),
    as a malformed name does: the site's developer reads why in the session frame."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise IdentityRefused("bad_identity", "identify: `attributes` must be an object.")
    if len(raw) > ATTRIBUTES_MAX_KEYS:
        raise IdentityRefused(
            "bad_identity", f"identify: at most {ATTRIBUTES_MAX_KEYS} `attributes`."
        )
    clean: dict[str, str | int | float | bool] = {}
    for name, value in raw.items():
        if not name or len(name) > ATTRIBUTE_KEY_MAX_CHARS or not is_utf8(name):
            raise IdentityRefused(
                "bad_identity",
                f"identify: attribute names are 1 to {ATTRIBUTE_KEY_MAX_CHARS} characters.",
            )
        if isinstance(value, str) and is_utf8(value):
            clean[name] = value[:ATTRIBUTE_VALUE_MAX_CHARS]
        elif isinstance(value, bool) or (
            isinstance(value, int | float) and math.isfinite(value) and abs(value) < 2**53
        ):
            clean[name] = value
        else:
            raise IdentityRefused(
                "bad_identity",
                f"identify: attribute `{name[:40]}` must be a string, number or boolean.",
            )
    return clean


def verify(claim: Claim) -> None:
    """Raises IdentityRefused unless the claim's hash signs its id (in constant time)."""
    if not hmac.compare_digest(claim.user_hash.encode(), user_hash(claim.external_id).encode()):
        raise IdentityRefused("bad_user_hash", "identify: `user_hash` does not match `id`.")


def identify(visitor_id: uuid.UUID | None, raw: object) -> Identified:
    """The widget's visitor after the host page's claim `raw`. Verified: the user's Customer
    (created, or its name and email brought up to date), with the anonymous visitor's
    conversations merged in; a visitor already identified as another user brings nothing
    along. Refused: the anonymous visitor as they were, or a fresh one when the
    token names an identified user (the host page says someone else is signed in now)."""
    try:
        claim = parse_claim(raw)
        verify(claim)
    except IdentityRefused as refused:
        logger.warning("Widget identify refused: %s (%s)", refused.code, refused.message)
        if visitor_id is None or _identified(visitor_id):
            visitor_id = services.new_visitor_id()
        return Identified(visitor_id, error=refused)
    with transaction.atomic():
        customer = _customer_for(claim)
        merged: tuple[uuid.UUID, ...] = ()
        # Locked: two tabs identifying the same visitor at once merge it once.
        anonymous = visitor_id if visitor_id != customer.pk else None
        if anonymous is not None and not _identified(anonymous, lock=True):
            merged = _merge(anonymous, customer)
        for conversation_id in merged:
            state.notify_team(conversation_id)  # the inbox shows them under the user's name
    return Identified(customer.pk, merged=merged)


def _identified(customer_id: uuid.UUID, *, lock: bool = False) -> bool:
    """Whether the visitor is an identified user (an anonymous one may have no row yet)."""
    customers = Customer.objects.filter(pk=customer_id)
    if lock:
        customers = customers.select_for_update()
    row = customers.values_list("external_id", flat=True).first()
    return row is not None


def _customer_for(claim: Claim) -> Customer:
    customer, created = Customer.objects.get_or_create(
        external_id=claim.external_id,
        defaults={
            "display_name": claim.name,
            "email": claim.email,
            "attributes": claim.attributes or {},
        },
    )
    changes: dict[str, Any] = {
        name: value
        for name, value in (("display_name", claim.name), ("email", claim.email))
        if value and getattr(customer, name) != value
    }
    if claim.attributes is not None and claim.attributes != customer.attributes:
        changes["attributes"] = claim.attributes
    if changes and not created:
        Customer.objects.filter(pk=customer.pk).update(**changes)
        for name, value in changes.items():
            setattr(customer, name, value)
    return customer


def _merge(anonymous_id: uuid.UUID, customer: Customer) -> tuple[uuid.UUID, ...]:
    """Move the anonymous visitor's conversations to the identified customer and remove the
    anonymous row (it held nothing else). Runs in the caller's transaction; a second call
    finds nothing to move."""
    moved = tuple(
        Conversation.objects.select_for_update()
        .filter(customer_id=anonymous_id)
        .values_list("pk", flat=True)
    )
    if moved:
        Conversation.objects.filter(pk__in=moved).update(customer=customer)
    # Never a row that still has a conversation: deleting it would delete that too.
    Customer.objects.filter(
        pk=anonymous_id, external_id__isnull=True, conversations__isnull=True
    ).delete()
    return moved
