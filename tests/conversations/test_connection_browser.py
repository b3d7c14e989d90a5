"""Connection truth (issue 16, point 6), in a real Chromium against the real app (uvicorn, a
Celery worker, the offline answerer): the page says "You're offline" when the browser is
offline and when the network silently stops carrying packets (a loopback proxy that holds
them, the mobile case no `offline` event reports), messages typed meanwhile wait as queued,
and everything is delivered exactly once when the connection is back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conversations.models import Turn
from tests.a11y import assert_no_serious_violations
from tests.conftest import free_port, start_offline_app

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason=(
            "the page's offline banner and queue; storing a message has its tests on both paths"
        )
    ),
]

OFFLINE = "You're offline — we'll send it when you're back"
QUEUED = "Will send when you're back"
# chat.js: a ping every 4 s, 3 s for an answer; a little more for a loaded machine.
SILENCE_SEEN_WITHIN_S = 4 + 3 + 2


class PausableProxy:
    """A TCP proxy on loopback that can stop carrying bytes without closing anything, like a
    mobile network that drops packets: both ends keep their sockets and hear nothing. What
    it holds while paused goes on when it resumes, as TCP retransmits it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                self.flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self.flowing.wait()  # read while paused: held until the network is back
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def app(asgi_server, celery_worker) -> Iterator[tuple[str, PausableProxy]]:
    """The app, and a pausable proxy in front of it (its origin allowed like the app's)."""
    port = free_port()
    proxy = PausableProxy(port)
    allowed = f"http://127.0.0.1:{port},http://127.0.0.1:{proxy.port}"
    url = start_offline_app(
        asgi_server, celery_worker, word_delay_ms=5, port=port, ALLOWED_ORIGINS=allowed
    )
    yield url, proxy
    proxy.close()


def open_chat_page(chromium, url: str):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{url}/chat/")
    page.locator(".connection-status[data-state=connected]").wait_for()
    return context, page


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def customer_bubble(page, text: str):
    return page.get_by_role("log").locator("[data-author=customer]", has_text=text)


def seconds_until(locator, state: str, timeout_s: float) -> float:
    started = time.monotonic()
    locator.wait_for(state=state, timeout=timeout_s * 1000)
    return time.monotonic() - started


def test_it_shows_offline_at_once_queues_messages_and_sends_them_once_back_online(chromium, app):
    url, _ = app
    context, page = open_chat_page(chromium, url)
    try:
        banner = page.get_by_role("status").filter(has_text=OFFLINE)
        context.set_offline(True)
        assert seconds_until(banner, "visible", 5) < 5
        assert page.locator(".connection-status").inner_text() == "Offline"

        send(page, "Where is my parcel?")
        bubble = customer_bubble(page, "Where is my parcel?")
        assert bubble.get_attribute("data-status") == "queued"
        assert bubble.locator(".message__delivery").inner_text() == QUEUED
        assert_no_serious_violations(page, "offline, a message queued")
        page.wait_for_timeout(1_500)  # offline, the page does not spin reconnects
        assert Turn.objects.count() == 0

        context.set_offline(False)
        assert seconds_until(banner, "hidden", 2) < 2
        page.locator(".connection-status[data-state=connected]").wait_for()
        page.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        assert bubble.get_attribute("data-status") == "sent"
        assert bubble.locator(".message__delivery").is_hidden()
        assert Turn.objects.filter(author="customer").count() == 1
        assert Turn.objects.get(author="bot").status == "done"
    finally:
        context.close()


def test_it_notices_a_network_that_silently_drops_packets_and_delivers_once_when_back(
    chromium, app
):
    _, proxy = app
    context, page = open_chat_page(chromium, f"http://127.0.0.1:{proxy.port}")
    try:
        banner = page.get_by_role("status").filter(has_text=OFFLINE)
        proxy.pause()
        # Sent into the silence: the socket takes it, nothing says it is lost yet.
        send(page, "Is anyone there?")
        before = customer_bubble(page, "Is anyone there?")
        assert before.get_attribute("data-status") == "sending"

        assert seconds_until(banner, "visible", SILENCE_SEEN_WITHIN_S) < SILENCE_SEEN_WITHIN_S
        assert before.get_attribute("data-status") == "queued"
        assert before.locator(".message__delivery").inner_text() == QUEUED
        send(page, "How do I return an item?")
        after = customer_bubble(page, "How do I return an item?")
        assert after.get_attribute("data-status") == "queued"
        assert Turn.objects.count() == 0

        # Back: the held frames (the first message on the dead socket) and the page's re-send
        # on its new socket both reach the server; the client ids make that one message each.
        proxy.resume()
        assert seconds_until(banner, "hidden", 2) < 2
        log = page.get_by_role("log")
        log.locator('[data-author=bot][data-status="done"]').nth(1).wait_for()
        for bubble in (before, after):
            assert bubble.get_attribute("data-status") == "sent"
        page.wait_for_timeout(500)
        assert sorted(Turn.objects.filter(author="customer").values_list("text", flat=True)) == [
            "How do I return an item?",
            "Is anyone there?",
        ]
        assert Turn.objects.filter(author="bot", status="done").count() == 2
        assert log.locator("[data-author=customer]").count() == 2
    finally:
        context.close()
