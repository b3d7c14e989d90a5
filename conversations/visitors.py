"""Anonymous customers are identified by a signed cookie holding their Customer id."""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse

_SALT = "support-bot.visitor"


def _signer() -> signing.TimestampSigner:
    # One signer for both directions: the page sets the cookie, the websocket reads it.
    return signing.TimestampSigner(salt=_SALT)


def visitor_id_from_cookie(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    signer = _signer()
    try:
        return uuid.UUID(signer.unsign(value, max_age=settings.CHAT_VISITOR_MAX_AGE))
    except (signing.BadSignature, ValueError):
        return None


def visitor_id_from_request(request: HttpRequest) -> uuid.UUID | None:
    return visitor_id_from_cookie(request.COOKIES.get(settings.CHAT_VISITOR_COOKIE))


def remember_visitor(response: HttpResponse, customer_id: uuid.UUID) -> None:
    response.set_cookie(
        settings.CHAT_VISITOR_COOKIE,
        signed_visitor_cookie(customer_id),
        max_age=settings.CHAT_VISITOR_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )


def signed_visitor_cookie(customer_id: uuid.UUID) -> str:
    """The cookie value for a customer (tests and benchmarks log in with it)."""
    return _signer().sign(str(customer_id))


class VisitorMiddleware:
    """ASGI middleware: puts the visitor's customer id (or None) in scope["customer_id"]."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookie_header = b""
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                cookie_header = value
                break
        jar = SimpleCookie()
        try:
            jar.load(cookie_header.decode("latin-1"))
        except Exception:  # noqa: BLE001 - a mangled cookie header means "no visitor"
            jar = SimpleCookie()
        morsel = jar.get(settings.CHAT_VISITOR_COOKIE)
        scope = dict(scope, customer_id=visitor_id_from_cookie(morsel.value if morsel else None))
        return await self.app(scope, receive, send)
