"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives (no tests here).
Test modules re-export the fixture by assignment: `smtp_server = smtp.smtp_server`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port

# Every SMTP command at INFO would bury a failing test's own output.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class Mailbox:
    """The messages an SMTP server on 127.0.0.1:port accepted. Not listening until start():
    a test may point the app at it while it is still down."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def app_settings(self) -> dict[str, str]:
        """The environment that makes a process send its email here."""
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(self.port),
            "EMAIL_TIMEOUT_S": "5",
        }

    def wait_for(self, count: int, timeout: float = 15) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} emails within {timeout}s, not {count}")
            time.sleep(0.05)
        return self.messages


def use_smtp(settings: Any, mailbox: Mailbox) -> None:
    """This test process sends its email to the mailbox (pytest-django keeps it in memory)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = mailbox.port
    settings.EMAIL_TIMEOUT = 5


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    found = re.search(r"https?://\S+/chat/continue/[^/\s]+/", text_of(message))
    assert found, text_of(message)
    return found.group(0)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(free_port())
    mailbox.start()
    yield mailbox
    mailbox.stop()


@pytest.fixture
def smtp_server_down() -> Iterator[Mailbox]:
    """A mailbox whose server is not listening yet (start() it)."""
    mailbox = Mailbox(free_port())
    yield mailbox
    mailbox.stop()
