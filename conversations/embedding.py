"""Which sites may embed the chat widget, and what the widget's iframe page and sockets check.

The allowed sites are the origins operators list in the admin (WidgetSite) plus
WIDGET_ALLOWED_ORIGINS from the environment; with WIDGET_ANY_SITE (the default under DEBUG,
`make run`) any site may embed. The list is read through the configuration cache: checking a
page or a socket costs no query.

The browser enforces the list on the iframe page through Content-Security-Policy
`frame-ancestors`; the loader (widget.js) also names the host page's origin (`site`), which
the page and every widget socket check against the list, so a site removed from it gets no
new conversation socket and a clear refusal instead of a silently blank frame.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from django.conf import settings

from support_bot import config_cache

from .models import WidgetSite
from .origins import normalise_origin as normalise_origin
from .visitors import signed_visitor_cookie, visitor_id_from_cookie


@config_cache.cached
def _admin_origins() -> tuple[str, ...]:
    return tuple(WidgetSite.objects.values_list("origin", flat=True))


def allowed_origins() -> tuple[str, ...]:
    """The sites allowed to embed the widget: the admin's, the environment's, and the pages
    allowed to open sockets anyway (ALLOWED_ORIGINS: Support Bot's own pages)."""
    listed = [*_admin_origins(), *settings.WIDGET_ALLOWED_ORIGINS, *settings.ALLOWED_ORIGINS]
    origins = []
    for origin in listed:
        try:
            origins.append(normalise_origin(origin))
        except ValueError:
            # A row written around the admin's validation, or a subdomain pattern of
            # ALLOWED_ORIGINS (https://.example.com), embeds nothing.
            continue
    return tuple(dict.fromkeys(origins))


def any_site_may_embed() -> bool:
    return bool(settings.WIDGET_ANY_SITE)


def may_embed(origin: str | None) -> bool:
    """Whether a page of `origin` may show the widget."""
    if not origin:
        return False
    try:
        origin = normalise_origin(origin)
    except ValueError:
        return False
    return any_site_may_embed() or origin in allowed_origins()


def frame_ancestors() -> str:
    """The Content-Security-Policy of the widget's iframe page: who may frame it. Browsers
    block the frame on any other site, whatever `site` a loader claims."""
    if any_site_may_embed():
        return "frame-ancestors *"
    sources = " ".join(["'self'", *allowed_origins()])
    return f"frame-ancestors {sources}"


def origin_of(url: str) -> str | None:
    """The origin of a URL (the install's own address, for the snippet)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


# --- The widget's visitor token ----------------------------------------------------------------
# A third-party iframe keeps no cookie in browsers that block them (Chromium without CHIPS, Safari,
# Firefox's strict mode), and a `Secure` cookie is not kept over plain http. The widget therefore
# keeps a signed token in its own (partitioned) storage and presents it in the socket's first
# frame, never in a URL (access logs). It is the visitor cookie's value: the same signature, salt
# and lifetime (CHAT_VISITOR_MAX_AGE).


def visitor_token(customer_id: uuid.UUID) -> str:
    return signed_visitor_cookie(customer_id)


def visitor_from_token(token: object) -> uuid.UUID | None:
    """The visitor a token names, or None for a missing, forged, mangled or expired one."""
    if not isinstance(token, str) or not 0 < len(token) <= 200:
        return None
    return visitor_id_from_cookie(token)
