"""The widget on another site, in a real Chromium (issue 16, point 1): the host page is served
from one site (http://localhost:<port>, a tiny static server) and loads widget.js from the
app on another (http://127.0.0.1:<port>, uvicorn with a Celery worker and the offline
answerer). This Chromium gives the cross-site iframe neither cookies nor storage; the loader
keeps the widget's signed visitor token in the host page's storage instead."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
from django.core.management import call_command

from conversations.models import Conversation, Customer, Turn, WidgetSite
from tests.conftest import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


def serve_host_page(body: str | Mapping[str, str]) -> tuple[ThreadingHTTPServer, str]:
    """A shop's page on another site: http://localhost:<port>/ (127.0.0.1 is another site).
    `body`: one page for every path, or the pages by path (an empty page for any other)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            page = body if isinstance(body, str) else body.get(self.path, "")
            payload = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{port}"


@pytest.fixture
def host_pages() -> Iterator[Callable[[str], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(body: str) -> str:
        server, url = serve_host_page(body)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def two_sites(asgi_server, celery_worker, host_pages):
    """(app, shop, elsewhere): the app, a shop allowed to embed it, a site that is not."""
    call_command("load_demo_kb", verbosity=0)
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    snippet = f'<script src="{app}/static/chat/widget.js" data-support-bot async></script>'
    page = f"<!doctype html><title>Shop</title><h1>Our shop</h1>{snippet}"
    shop = host_pages(page)
    elsewhere = host_pages(page)
    env = {"LLM_PROVIDER": "offline", "OFFLINE_WORD_DELAY_MS": "5"}
    celery_worker(**env)
    asgi_server(port=port, WIDGET_ANY_SITE="0", WIDGET_ALLOWED_ORIGINS=shop, **env)
    return app, shop, elsewhere


@pytest.fixture(scope="module")
def module_sites() -> Iterator[tuple[str, str, str]]:
    """(app, shop, elsewhere) as two_sites gives them, kept for the module's app (offline_app)."""
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    snippet = f'<script src="{app}/static/chat/widget.js" data-support-bot async></script>'
    page = f"<!doctype html><title>Shop</title><h1>Our shop</h1>{snippet}"
    servers = [serve_host_page(page), serve_host_page(page)]
    yield app, servers[0][1], servers[1][1]
    for server, _ in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def module_app_options(module_sites: tuple[str, str, str]) -> dict[str, object]:
    app, shop, _ = module_sites
    port = int(app.rsplit(":", 1)[1])
    return {"port": port, "WIDGET_ANY_SITE": "0", "WIDGET_ALLOWED_ORIGINS": shop}


@pytest.fixture
def shared_two_sites(module_sites, offline_app):
    """two_sites on the module's app: started once for the module's tests."""
    return module_sites


def open_widget(page, url: str):
    page.goto(url)
    page.get_by_role("button", name="Open chat").click()
    return page.frame_locator("#support-bot-frame")


def test_the_widget_on_another_site_answers_and_keeps_the_conversation(chromium, shared_two_sites):
    app, shop, _ = shared_two_sites
    assert shop.split(":")[1] != app.split(":")[1]  # localhost and 127.0.0.1: two sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, shop)
        frame.locator(".connection-status[data-state=connected]").wait_for()
        # Opening the widget stores nothing, and the frame got no cookie to rely on.
        assert Customer.objects.count() == 0 and Conversation.objects.count() == 0
        assert not [c for c in context.cookies() if c["name"] == "sb_visitor"]

        frame.get_by_role("textbox", name="Message").fill("How do I return an item?")
        frame.get_by_role("button", name="Send").click()
        frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        assert Customer.objects.count() == 1
        reply = Turn.objects.get(author="bot")
        assert reply.status == "done" and reply.text

        page.reload()
        frame = open_widget(page, shop)
        frame.locator(".connection-status[data-state=connected]").wait_for()
        log = frame.get_by_role("log")
        log.locator('[data-author="bot"][data-status="done"]').wait_for()
        assert "How do I return an item?" in log.locator('[data-author="customer"]').inner_text()
        assert Customer.objects.count() == 1 and Conversation.objects.count() == 1
        # "Your conversations" works with the token too (no cookie in this frame).
        frame.get_by_role("button", name="Your conversations").click()
        frame.locator(".history__link").first.wait_for()
        assert frame.locator(".history__error").is_hidden()
        # Following it loads another iframe page, which finds the token in its fragment.
        frame.locator(".history__link").first.click()
        frame.locator(".connection-status[data-state=connected]").wait_for()
        assert "How do I return an item?" in frame.get_by_role("log").inner_text()
        assert Customer.objects.count() == 1
    finally:
        context.close()


def test_a_site_not_allowed_gets_no_chat_and_a_clear_message(chromium, shared_two_sites):
    app, _, elsewhere = shared_two_sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, elsewhere)
        frame.get_by_role("heading", name="Chat unavailable on this site").wait_for()
        assert "may not be embedded in this site" in frame.locator("main").inner_text()
        assert frame.locator("#chat").count() == 0

        # A loader that lies about its site is stopped by the browser: frame-ancestors.
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        lying = f"{app}/chat/?" + urlencode({"embed": "1", "site": shared_two_sites[1]})
        page.evaluate(
            """(src) => { const f = document.createElement('iframe'); f.id = 'liar';
                          f.src = src; document.body.append(f); }""",
            lying,
        )
        page.wait_for_timeout(1_500)
        assert page.frame_locator("#liar").locator("#chat").count() == 0
        assert any("frame-ancestors" in line for line in console), console
        assert Customer.objects.count() == 0
    finally:
        context.close()


def test_an_operator_allows_a_site_in_the_admin_and_its_widget_works(chromium, shared_two_sites):
    _, _, elsewhere = shared_two_sites
    WidgetSite.objects.create(origin=elsewhere)  # the configuration cache tells every process
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, elsewhere)
        frame.locator(".connection-status[data-state=connected]").wait_for()
        assert Customer.objects.count() == 0
    finally:
        context.close()
