"""The door every websocket goes through (support_bot/asgi.py): the browser's full origin
(scheme, host and port) must be an allowed one, on every socket, and a path no socket serves
is refused without an error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tests import personas
from tests.conftest import ORIGIN, ROOT, visitor_cookie_header
from tests.inbox.test_permissions import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

alice_agent = personas.alice_agent
olivia_operator = personas.olivia_operator

# Another port of an allowed host is another site: a page there must open nothing here.
OTHER_PORT = "http://127.0.0.1:9999"


async def connects(path: str, cookie: bytes, origin: str | None) -> bool:
    from support_bot.asgi import application

    headers = [(b"cookie", cookie)]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    communicator = WebsocketCommunicator(application, path, headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


@pytest.mark.parametrize(
    "origin",
    [
        OTHER_PORT,
        "https://127.0.0.1",  # another scheme
        "http://127.0.0.1.evil.example",
        "null",  # a sandboxed iframe or a file:// page
        None,  # browsers always send one; a client without it is refused too
    ],
)
async def test_it_refuses_every_socket_from_an_origin_that_is_not_allowed(
    alice_conversation, alice_agent, olivia_operator, origin
):
    customer = await database_sync_to_async(lambda: alice_conversation.customer)()
    agent = (await database_sync_to_async(session_cookie)(alice_agent)).encode()
    operator = (await database_sync_to_async(session_cookie)(olivia_operator)).encode()
    chat = f"/ws/chat/{alice_conversation.pk}/"
    assert await connects(chat, visitor_cookie_header(customer), ORIGIN)  # the allowed origin
    assert not await connects(chat, visitor_cookie_header(customer), origin)
    assert await connects("/ws/inbox/", agent, ORIGIN)
    assert not await connects("/ws/inbox/", agent, origin)
    assert await connects("/ws/studio/", operator, ORIGIN)
    assert not await connects("/ws/studio/", operator, origin)


async def test_it_refuses_a_socket_to_an_unknown_path_without_an_error(caplog):
    from support_bot.asgi import application

    for path in ("/ws/nope/", "/", "/ws/chat/"):
        communicator = WebsocketCommunicator(application, path, [(b"origin", ORIGIN.encode())])
        connected, _ = await communicator.connect(timeout=5)
        assert not connected
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def allowed_origins(**env: str) -> list[str]:
    """settings.ALLOWED_ORIGINS as a fresh process computes it from this environment."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ALLOWED_ORIGINS", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "PORT", "DEBUG")
    }
    printed = subprocess.run(
        [sys.executable, "-c", "from support_bot import settings; print(settings.ALLOWED_ORIGINS)"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )
    assert printed.returncode == 0, printed.stderr
    return eval(printed.stdout)  # noqa: S307 - a list's repr, printed by our own settings


@pytest.mark.django_db(transaction=False)
def test_make_run_allows_the_pages_of_its_own_address_only():
    # The launcher's defaults: DEBUG=1, port 8000 (PORT moves it).
    assert allowed_origins(DEBUG="1") == ["http://127.0.0.1:8000", "http://localhost:8000"]
    assert allowed_origins(DEBUG="1", PORT="8123") == [
        "http://127.0.0.1:8123",
        "http://localhost:8123",
    ]


@pytest.mark.django_db(transaction=False)
def test_production_allows_https_on_its_hosts_and_the_csrf_trusted_origins():
    assert allowed_origins(
        ALLOWED_HOSTS="support.example.com,*",
        CSRF_TRUSTED_ORIGINS="https://help.example.com",
        SECURE_SSL_REDIRECT="1",
    ) == ["https://help.example.com", "https://support.example.com"]
    # A plain-HTTP trial (docker compose on localhost:8000) also allows its own port.
    assert allowed_origins(ALLOWED_HOSTS="localhost", SECURE_SSL_REDIRECT="0") == [
        "https://localhost",
        "http://localhost:8000",
    ]


@pytest.mark.django_db(transaction=False)
def test_allowed_origins_set_explicitly_are_used_as_given_and_must_be_full_origins():
    assert allowed_origins(ALLOWED_ORIGINS="https://a.example, http://b.example:8080") == [
        "https://a.example",
        "http://b.example:8080",
    ]
    failed = subprocess.run(
        [sys.executable, "-c", "from support_bot import settings"],
        cwd=ROOT,
        env={**os.environ, "ALLOWED_ORIGINS": "support.example.com"},
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert "ALLOWED_ORIGINS" in failed.stderr and "scheme" in failed.stderr
