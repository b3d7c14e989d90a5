"""Attachments in a real Chromium against the real stack (uvicorn, a Celery worker, Redis, the
database, the offline answerer): the customer attaches a photo on the chat page and sees its
thumbnail, the agent sees it in the inbox and sends a PDF back, which the customer downloads.
And in the widget on another site, whose iframe has no cookie: the same, with its token.

The servers and this process store files in the test's own MEDIA_ROOT."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from PIL import Image

from conversations.models import Attachment, Conversation, Turn
from tests import personas
from tests.conftest import free_port
from tests.conversations.test_widget_browser import host_pages, open_widget  # noqa: F401

alice_agent = personas.alice_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def photo() -> bytes:
    image = Image.new("RGB", (640, 480), "navy")
    image.paste(Image.new("RGB", (320, 240), "gold"), (160, 120))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def module_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def module_app_options(module_media: Path) -> dict[str, object]:
    return {"word_delay_ms": 5, "MEDIA_ROOT": str(module_media)}


@pytest.fixture
def media(settings, module_media: Path) -> Path:
    """The app's media folder, emptied for each test."""
    shutil.rmtree(module_media)
    module_media.mkdir()
    settings.MEDIA_ROOT = str(module_media)
    return module_media


@pytest.fixture
def stack(media, offline_app):
    return offline_app


def agent_context(chromium, base: str, user):
    client = Client()
    client.force_login(user)
    context = chromium.new_context(accept_downloads=True)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base,
            }
        ]
    )
    return context


def attach(page_or_frame, page, name: str, mime: str, content: bytes) -> None:
    """Choose a file the way a person does: the attach button opens the file chooser."""
    with page.expect_file_chooser() as chooser:
        page_or_frame.get_by_role("button", name="Attach images or PDF files").click()
    chooser.value.set_files({"name": name, "mimeType": mime, "buffer": content})


# The width of an <img> once its picture has loaded and decoded (the server's 320 px thumbnail).
DECODED_WIDTH = "img => img.decode().then(() => img.naturalWidth)"


def test_a_photo_goes_to_the_agent_and_a_pdf_comes_back(chromium, stack, alice_agent, media):
    customer_context = chromium.new_context(accept_downloads=True)
    staff_context = agent_context(chromium, stack, alice_agent)
    try:
        customer = customer_context.new_page()
        agent = staff_context.new_page()
        for page in (customer, agent):
            page.set_default_timeout(20_000)

        customer.goto(f"{stack}/chat/")
        customer.wait_for_selector(".connection-status[data-state=connected]")
        attach(customer, customer, "lamp.png", "image/png", photo())
        assert "lamp.png" in customer.get_by_role("list", name="Files to send").inner_text()
        customer.get_by_role("textbox", name="Message").fill("My lamp looks like this")
        customer.get_by_role("button", name="Send").click()

        # The customer's message shows the thumbnail, served by the app to its cookie.
        mine = customer.get_by_role("log").locator('[data-author="customer"]').last
        thumbnail = mine.get_by_role("img", name="lamp.png")
        thumbnail.wait_for()
        assert thumbnail.evaluate(DECODED_WIDTH) == 320
        assert "My lamp looks like this" in mine.inner_text()
        # The upload's answer clears the chosen files; the message's turn event, published at
        # commit, may show it a moment before that answer arrives.
        customer.get_by_role("list", name="Files to send").wait_for(state="hidden")
        # Words came with it: the bot answers them.
        customer.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')

        conversation = Conversation.objects.get()
        attachment = Attachment.objects.get()
        assert (media / attachment.file.name).is_file()

        # The agent sees the photo in the conversation view.
        agent.goto(f"{stack}/agent/conversations/{conversation.pk}/")
        agent.wait_for_selector(".connection-status[data-state=connected]")
        transcript = agent.get_by_role("log", name="Transcript")
        photo_in_inbox = transcript.get_by_role("img", name="lamp.png")
        photo_in_inbox.wait_for()
        assert photo_in_inbox.evaluate(DECODED_WIDTH) == 320

        # The agent sends a PDF with a line of text.
        attach(agent, agent, "invoice-1234.pdf", "application/pdf", PDF)
        agent.get_by_role("textbox", name="Reply").fill("Here is your invoice")
        agent.get_by_role("button", name="Send").click()
        transcript.locator('[data-author="agent"] .attachment__link').wait_for()

        # The customer sees a link with its name and size, live, and downloads it.
        from_agent = customer.get_by_role("log").locator('[data-author="agent"]').last
        link = from_agent.get_by_role("link", name="invoice-1234.pdf")
        link.wait_for()
        assert "Here is your invoice" in from_agent.inner_text()
        assert "B" in link.inner_text()  # its size
        with customer.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == "invoice-1234.pdf"
        assert Path(download.value.path()).read_bytes() == PDF
        agent_turn = Turn.objects.get(author="agent")
        assert agent_turn.attachments.get().content_type == "application/pdf"
    finally:
        customer_context.close()
        staff_context.close()


def test_a_refused_file_is_explained_in_the_composer(chromium, stack, media):
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{stack}/chat/")
        page.wait_for_selector(".connection-status[data-state=connected]")
        # The browser calls it a PNG; its content says otherwise.
        attach(page, page, "cat.png", "image/png", b"<html>not an image</html>")
        page.get_by_role("button", name="Send").click()

        error = page.locator("#composer-error")
        error.wait_for()
        assert "only images" in error.inner_text()
        assert page.get_by_role("log").locator('[data-author="customer"]').count() == 0
        assert not Turn.objects.exists()
        assert not [p for p in media.rglob("*") if p.is_file()]
    finally:
        context.close()


@pytest.fixture
def widget_sites(asgi_server, celery_worker, host_pages, media):  # noqa: F811
    call_command("load_demo_kb", verbosity=0)
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    snippet = f'<script src="{app}/static/chat/widget.js" data-support-bot async></script>'
    shop = host_pages(f"<!doctype html><title>Shop</title><h1>Our shop</h1>{snippet}")
    env = {"LLM_PROVIDER": "offline", "OFFLINE_WORD_DELAY_MS": "5", "MEDIA_ROOT": str(media)}
    celery_worker(**env)
    asgi_server(port=port, WIDGET_ANY_SITE="0", WIDGET_ALLOWED_ORIGINS=shop, **env)
    return app, shop


def test_the_widget_attaches_and_shows_files_without_a_cookie(chromium, widget_sites):
    app, shop = widget_sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, shop)
        frame.locator(".connection-status[data-state=connected]").wait_for()
        attach(frame, page, "lamp.png", "image/png", photo())
        frame.get_by_role("button", name="Send").click()

        mine = frame.get_by_role("log").locator('[data-author="customer"]').last
        mine.get_by_role("img", name="lamp.png").wait_for()
        # Fetched with the widget's token and shown from a blob: the iframe sends no cookie.
        thumbnail = frame.locator(".attachment__thumbnail[src^='blob:']")
        thumbnail.wait_for()
        assert thumbnail.evaluate(DECODED_WIDTH) == 320
        # Files alone: no bot reply, a notice asks what the customer needs.
        frame.get_by_role("log").locator('[data-author="system"]').wait_for()
        assert Turn.objects.filter(author="bot").count() == 0
    finally:
        context.close()
