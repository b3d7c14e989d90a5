"""Requests this app refuses, with a code for programs and a message for people."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """A request a socket or endpoint refuses: `code` for programs, the message for people.
    Domain errors subclass it (the socket protocol's, the inbox's, the playground's); sockets
    answer any of them with an error frame."""

    code = "refused"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def as_frame(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


class CustomerRequestRefused(Refused):
    """A customer's request refused (an email address or a rating that can't be taken)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)
