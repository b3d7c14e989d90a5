"""The customer websocket's wire protocol: frame validation and the frames the server sends.

Documented for integrators in docs/protocol.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .errors import Refused

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_LARGE = 1009

# Validators use fullmatch: `$` would also match before a trailing newline.
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# No frame of the protocol nests deeper than this; far deeper JSON would exhaust the parser's
# recursion (RecursionError) and is refused before it is parsed.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class FrameError(Refused):
    """A frame the server refuses, with a code for programs and a message for people."""

    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message, code)
        self.client_id = client_id

    def as_frame(self) -> dict[str, Any]:
        frame = super().as_frame()
        if self.client_id:
            frame["client_id"] = self.client_id
        return frame


@dataclass(frozen=True)
class MessageFrame:
    client_id: str
    text: str


@dataclass(frozen=True)
class ResumeFrame:
    reply_id: int
    after: int


@dataclass(frozen=True)
class ContactFrame:
    email: str


@dataclass(frozen=True)
class RateFrame:
    score: int
    comment: str


def decode(raw: str | None) -> dict[str, Any]:
    """A text frame as a JSON object; binary frames (raw is None) are refused."""
    if raw is None:
        raise FrameError("bad_frame", "Send JSON text frames; binary frames are not supported.")
    if len(raw.encode()) > settings.CHAT_MAX_FRAME_BYTES:
        raise FrameError(
            "frame_too_large",
            f"That frame is too large (the limit is {settings.CHAT_MAX_FRAME_BYTES} bytes).",
        )
    if _nested_too_deep(raw):
        raise FrameError("bad_json", f"That frame nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):
        raise FrameError("bad_json", "That frame is not valid JSON.") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError("bad_json", 'A frame must be a JSON object with a "type".')
    return frame


def _nested_too_deep(raw: str) -> bool:
    """Whether JSON text nests objects and arrays deeper than MAX_JSON_DEPTH. Cheap: frames with
    few brackets (all real ones) are not scanned; brackets inside strings do not count."""
    if raw.count("[") + raw.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for char in _JSON_STRING.sub("", raw):
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def is_utf8(text: str) -> bool:
    """Whether text can be stored and sent on: JSON's \\ud800 escapes decode to lone surrogates,
    which no UTF-8 encoder (the database's, a websocket's) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_message(frame: dict[str, Any]) -> MessageFrame:
    client_id = frame.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise FrameError(
            "bad_client_id", "A message needs a client_id of 1-64 letters, digits or -_.:"
        )
    text = frame.get("text")
    if not isinstance(text, str) or not text.strip():
        raise FrameError("empty_text", "Please type a message before sending.", client_id)
    if not is_utf8(text):
        raise FrameError(
            "bad_text",
            "That message contains characters that cannot be sent (a broken emoji or symbol). "
            "Please retype it.",
            client_id,
        )
    text = text.strip()
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise FrameError(
            "too_long",
            f"That message is {len(text)} characters long; the limit is {limit}.",
            client_id,
        )
    return MessageFrame(client_id=client_id, text=text)


def parse_resume(frame: dict[str, Any]) -> ResumeFrame:
    reply_id, after = frame.get("reply_id"), frame.get("after", 0)
    if (
        type(reply_id) is not int  # bool is an int subclass: `true` is no reply id
        or type(after) is not int
        or reply_id <= 0
        or after < 0
    ):
        raise FrameError("bad_resume", "resume needs an integer reply_id and after ≥ 0.")
    return ResumeFrame(reply_id=reply_id, after=after)


def parse_contact(frame: dict[str, Any]) -> ContactFrame:
    """`{"type":"contact","email":"…"}`; the address itself is checked by contact.py."""
    email = frame.get("email")
    if not isinstance(email, str) or not email.strip():
        raise FrameError("bad_email", "Please enter your email address.")
    if not is_utf8(email):
        raise FrameError("bad_email", "That doesn't look like an email address. Please check it.")
    return ContactFrame(email=email)


def parse_rate(frame: dict[str, Any]) -> RateFrame:
    """`{"type":"rate","score":1..5,"comment":"…"}` (comment optional, ≤ 2,000 characters)."""
    score, comment = frame.get("score"), frame.get("comment", "")
    if type(score) is not int or not 1 <= score <= 5:  # bool is an int subclass
        raise FrameError("bad_score", "Please choose a rating from 1 to 5.")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or not is_utf8(comment):
        raise FrameError("bad_comment", "The comment must be text.")
    return RateFrame(score=score, comment=comment)
