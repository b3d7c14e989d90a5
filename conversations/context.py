"""Where and in what a chat started, for the agent's context panel (docs/inbox.md#context):
the page and its referrer, the browser, its language and time zone. Recorded once, on the
conversation's row when it is stored (services.store_conversation).

The browser says it in two places: the socket's handshake (User-Agent, Accept-Language) and a
`context` frame the chat page sends on open (docs/protocol.md#context): the page it is on (for
the widget, the host page, which widget.js hands to the frame), document.referrer,
navigator.language and the time zone. All of it is the visitor's word, so each value is checked
and clipped here; anything malformed is dropped, never refused: a chat never fails over it.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ua_parser import parse as parse_user_agent

from .models import Conversation

URL_MAX_CHARS = Conversation._meta.get_field("started_page_url").max_length or 2000
USER_AGENT_MAX_CHARS = Conversation._meta.get_field("user_agent").max_length or 512
BROWSER_MAX_CHARS = Conversation._meta.get_field("browser").max_length or 120
LANGUAGE_MAX_CHARS = Conversation._meta.get_field("browser_language").max_length or 35
# BCP 47 as browsers send it: "en", "pt-BR", "zh-Hant-TW".
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,4}")


@dataclass(frozen=True)
class StartContext:
    """The checked values, "" for what is unknown; the fields of Conversation they fill."""

    started_page_url: str = ""
    started_referrer: str = ""
    user_agent: str = ""
    browser: str = ""
    browser_language: str = ""
    time_zone: str = ""

    def fields(self) -> dict[str, str]:
        return asdict(self)


def clean_url(value: object) -> str:
    """An http(s) URL without its credentials or fragment (where a page may keep a token), or
    "" for anything else or anything longer than URL_MAX_CHARS."""
    if not isinstance(value, str) or not value or len(value) > URL_MAX_CHARS:
        return ""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return ""
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises ValueError for a port that is no number
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))


def url_host(url: str) -> str:
    """The host of a URL clean_url kept ("" for none): "shop.example.com"."""
    return (urlsplit(url).hostname or "") if url else ""


def browser_label(user_agent: str) -> str:
    """ "Chrome 131 on Windows" from a User-Agent header (ua-parser's uap-core rules); ""
    when nothing is recognised."""
    if not user_agent:
        return ""
    parsed = parse_user_agent(user_agent)
    agent = parsed.user_agent
    system = parsed.os
    name = ""
    if agent is not None and agent.family != "Other":
        name = f"{agent.family} {agent.major}" if agent.major else agent.family
    if system is not None and system.family != "Other":
        name = f"{name} on {system.family}" if name else system.family
    return name[:BROWSER_MAX_CHARS]


def clean_language(value: object) -> str:
    """A language tag ("pt-BR"), or "" for anything that is none."""
    if not isinstance(value, str):
        return ""
    tag = value.strip()
    if len(tag) > LANGUAGE_MAX_CHARS or not _LANGUAGE_TAG.fullmatch(tag):
        return ""
    return tag


def first_accepted_language(header: str) -> str:
    """The first language of an Accept-Language header ("fr-CH, fr;q=0.9" → "fr-CH")."""
    first = header.split(",", 1)[0].split(";", 1)[0]
    return clean_language(first)


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def clean_time_zone(value: object) -> str:
    """An IANA time zone this server knows ("Europe/Paris"), or ""."""
    if isinstance(value, str) and value in _time_zones():
        return value
    return ""


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> StartContext:
    """What a socket's handshake (or any request) says: the browser and its language."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in (b"user-agent", b"accept-language") and name not in found:
            found[name] = value.decode("latin-1")
    user_agent = found.get(b"user-agent", "")[:USER_AGENT_MAX_CHARS]
    return StartContext(
        user_agent=user_agent,
        browser=browser_label(user_agent),
        browser_language=first_accepted_language(found.get(b"accept-language", "")[:200]),
    )


def from_request_meta(meta: dict[str, Any]) -> StartContext:
    """from_headers for a Django request (an upload can start a conversation too)."""
    wanted = ((b"user-agent", "HTTP_USER_AGENT"), (b"accept-language", "HTTP_ACCEPT_LANGUAGE"))
    return from_headers(
        (name, str(meta[key]).encode("latin-1", "replace")) for name, key in wanted if meta.get(key)
    )


def with_frame(known: StartContext, frame: dict[str, Any]) -> StartContext:
    """The handshake's context completed by the page's `context` frame
    ({page, referrer, language, time_zone}); each malformed value is dropped."""
    return replace(
        known,
        started_page_url=clean_url(frame.get("page")),
        started_referrer=clean_url(frame.get("referrer")),
        browser_language=clean_language(frame.get("language")) or known.browser_language,
        time_zone=clean_time_zone(frame.get("time_zone")),
    )


_VERSION = re.compile(r" \d+(?= on |$)")


def visitor_label(conversation: Conversation) -> str:
    """A nameless customer as the inbox row names them: "Visitor from shop.example.com ·
    Chrome on Windows" (no version: the row names, the panel details); "" when nothing is
    known."""
    host = url_host(conversation.started_page_url)
    parts = [f"Visitor from {host}" if host else "Visitor"]
    if conversation.browser:
        parts.append(_VERSION.sub("", conversation.browser))
    return " · ".join(parts) if host or conversation.browser else ""
