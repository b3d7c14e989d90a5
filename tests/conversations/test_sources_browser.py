"""Sources under the bot's answers, in a real Chromium (Debian's package, driven by Playwright)
against the real stack: uvicorn, a Celery worker process, Redis and the database.

The knowledge base here is a few articles with made-up product names (the Zephyr lantern, the
Quokka doorbell, the Marmot hub), so the offline answerer can only answer each question from
the one article that is about it, whatever the retrieval's details.
"""

from __future__ import annotations

import json
import re

import pytest

from conversations.models import Turn
from tests.conftest import store_page_conversation
from tests.fixtures_kb import indexed_article

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="how the page shows an answer's sources; the database engine changes none of it"
    ),
]


LANTERN_TITLE = "Recharging the Zephyr lantern"
LANTERN_URL = "https://help.example.com/articles/zephyr-lantern"
LANTERN_QUESTION = "How do I recharge the Zephyr lantern?"

DOORBELL_TITLE = "Resetting the Quokka doorbell"
DOORBELL_QUESTION = "How do I reset the Quokka doorbell?"

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
HUB_TITLE = f"Pairing the Marmot hub {IMG}"
HUB_QUESTION = "How do I pair the Marmot hub?"

DONE = '[role=log] [data-author=bot][data-status="done"]'


@pytest.fixture
def articles(transactional_db: None) -> None:
    """The knowledge base. Created with objects.create, which skips the model's validation:
    the admin would refuse the javascript: URL, but an import or an old row may still hold one."""
    indexed_article(
        slug="zephyr-lantern",
        title=LANTERN_TITLE,
        body=(
            "To recharge the Zephyr lantern, plug its magnetic cable into any USB port. "
            "The ring glows amber while the lantern charges and turns green when it is full."
        ),
        url=LANTERN_URL,
        tags=["lantern"],
    )
    indexed_article(
        slug="quokka-doorbell",
        title=DOORBELL_TITLE,
        body="To reset the Quokka doorbell, hold its reset button until the light blinks blue.",
        url="javascript:alert(1)",
        tags=["doorbell"],
    )
    indexed_article(
        slug="marmot-hub",
        title=HUB_TITLE,
        body=f"To pair the Marmot hub, press its pairing button twice. {SCRIPT} {IMG}",
        url="",
        tags=["hub"],
    )


# The whole app with the offline answerer (the tests' default) and only our articles.
OFFLINE_APP = {"word_delay_ms": 5, "demo_kb": False}


@pytest.fixture
def stack(articles, offline_app):
    return offline_app


@pytest.fixture
def received() -> list[dict]:
    """Every frame the page's websockets received, in order."""
    return []


@pytest.fixture
def page(chromium, stack, received):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda data: received.append(data)))
    page.goto(f"{stack}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    yield page
    context.close()


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def answer_to(page, question: str):
    """Ask, wait for the whole answer, and return the bot's message."""
    send(page, question)
    page.wait_for_selector(DONE)
    return page.get_by_role("log").locator('[data-author="bot"]').last


def sources_of(message):
    return message.get_by_role("list", name="Sources")


def source_item(message, title: str):
    """The one source of the message with this title, shown as "[n] title"."""
    item = sources_of(message).get_by_role("listitem").filter(has_text=title)
    assert item.count() == 1
    assert re.fullmatch(rf"\[[1-9]\d*\] {re.escape(title)}", item.inner_text())
    return item


def test_it_lists_the_article_an_answer_came_from_under_it_as_a_safe_link(page, received):
    bot = answer_to(page, LANTERN_QUESTION)

    sources = sources_of(bot)
    assert sources.is_visible()
    text_box = bot.locator(".text").bounding_box()
    assert sources.bounding_box()["y"] >= text_box["y"] + text_box["height"]  # under the answer
    link = source_item(bot, LANTERN_TITLE).get_by_role("link")
    assert link.inner_text() == LANTERN_TITLE
    assert link.get_attribute("href") == LANTERN_URL
    assert link.get_attribute("target") == "_blank"
    assert {"noopener", "noreferrer"} <= set(link.get_attribute("rel").split())

    # It travelled in the reply's done frame and is stored with the bot turn.
    stored = Turn.objects.get(author="bot")
    assert (LANTERN_TITLE, LANTERN_URL) in [(s["title"], s["url"]) for s in stored.sources]
    done = [f for f in map(json.loads, received) if f.get("type") == "reply.done"]
    assert (LANTERN_TITLE, LANTERN_URL) in [(s["title"], s["url"]) for s in done[-1]["sources"]]


def test_it_shows_a_source_whose_url_is_not_http_as_plain_text(page):
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    bot = answer_to(page, DOORBELL_QUESTION)

    item = source_item(bot, DOORBELL_TITLE)
    stored = Turn.objects.get(author="bot").sources
    assert (DOORBELL_TITLE, "javascript:alert(1)") in [(s["title"], s["url"]) for s in stored]
    assert item.locator("a").count() == 0
    assert page.locator('a[href^="javascript" i]').count() == 0
    item.get_by_text(DOORBELL_TITLE).click()
    page.wait_for_timeout(300)
    assert dialogs == []


def test_it_shows_html_in_an_article_literally_and_never_runs_it(page):
    bot = answer_to(page, HUB_QUESTION)

    stored = Turn.objects.get(author="bot")
    assert HUB_TITLE in [source["title"] for source in stored.sources]
    for when in ("live", "after a reload"):
        if when == "after a reload":  # the turn comes back from the server as history
            page.reload()
            page.wait_for_selector(DONE)
        assert bot.locator(".text").inner_text() == stored.text.strip(), when
        source_item(bot, HUB_TITLE)
        assert IMG in bot.inner_text(), when
        assert page.get_by_role("log").locator("img, script, iframe, object").count() == 0, when
        assert page.evaluate("window.__pwned") is None, when


def test_it_keeps_the_sources_of_an_answer_after_a_reload(page):
    bot = answer_to(page, LANTERN_QUESTION)
    live = sources_of(bot).inner_text()
    assert source_item(bot, LANTERN_TITLE).get_by_role("link").get_attribute("href") == LANTERN_URL

    page.reload()
    page.wait_for_selector(DONE)
    bot = page.get_by_role("log").locator('[data-author="bot"]').last
    assert sources_of(bot).inner_text() == live
    link = source_item(bot, LANTERN_TITLE).get_by_role("link")
    assert link.get_attribute("href") == LANTERN_URL
    assert link.get_attribute("target") == "_blank"
    assert {"noopener", "noreferrer"} <= set(link.get_attribute("rel").split())


def test_it_links_only_absolute_http_and_https_source_urls(page):
    """Whatever a source's URL holds (an answer from a model, an imported article), only an
    absolute http(s) URL becomes a link; the [n] markers in the answer point to the sources."""
    sources = [
        ("Safe https", "https://help.example.com/a?x=1&y=2"),
        ("Safe http", "http://help.example.com/b"),
        ("Script", "javascript:alert(1)"),
        ("Script, disguised", " JaVaScRiPt:alert(1)"),
        ("Tab in the scheme", "java\tscript:alert(1)"),
        ("Data", "data:text/html,<script>alert(1)</script>"),
        ("VBScript", "vbscript:msgbox(1)"),
        ("Mail", "mailto:someone@example.com"),
        ("Relative", "/admin/"),
        ("Protocol-relative", "//evil.example.com/x"),
        ("Junk", "not a url"),
    ]
    conversation = store_page_conversation(page)
    Turn.objects.create(
        conversation=conversation,
        author=Turn.Author.BOT,
        status=Turn.Status.DONE,
        text="See [1] and [2]; [3] is plain text. [99] cites nothing.",
        sources=[{"title": title, "url": url} for title, url in sources],
    )
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.reload()
    page.wait_for_selector(DONE)

    bot = page.get_by_role("log").locator('[data-author="bot"]').last
    items = sources_of(bot).get_by_role("listitem")
    assert items.all_inner_texts() == [f"[{i}] {title}" for i, (title, _) in enumerate(sources, 1)]
    links = sources_of(bot).locator("a")
    assert [(a.inner_text(), a.get_attribute("href")) for a in links.all()] == [
        ("Safe https", "https://help.example.com/a?x=1&y=2"),
        ("Safe http", "http://help.example.com/b"),
    ]
    for i in range(2, len(sources)):
        items.nth(i).click()
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.get_by_role("log").locator("script, iframe, object, img").count() == 0

    # The answer's text is unchanged; its markers of real sources lead to them.
    text = bot.locator(".text")
    assert text.inner_text() == "See [1] and [2]; [3] is plain text. [99] cites nothing."
    markers = text.locator("a")
    assert markers.all_inner_texts() == ["[1]", "[2]", "[3]"]
    markers.nth(2).click()
    assert items.nth(2).evaluate("item => item === document.activeElement")
    assert page.url.endswith("/chat/")  # in-page only: no navigation, no fragment
