"""AI assist on the conversation page, in Chromium against the real stack (uvicorn, a Celery
worker running the assist task, Redis, the database, the offline answerer): on a multi-topic
conversation "Summarise" leads with the latest problem, and "Suggest reply" drafts an answer
to it with the article it cites shown as a link."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Customer, Turn
from tests import personas
from tests.conftest import start_offline_app
from tests.inbox.test_assist import BROKEN, REFUND, WARRANTY_URL
from tests.inbox.test_inbox_browser import agent_context

alice_agent = personas.alice_agent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="what the page draws from an assist frame; the database engine changes none of it"
    ),
]


def test_it_summarises_the_latest_problem_and_shows_the_suggestions_sources_as_links(
    chromium, asgi_server, celery_worker, alice_agent
):
    base = start_offline_app(asgi_server, celery_worker, word_delay_ms=0)
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name="Al"))
    # Written straight to the tables: Playwright's event loop runs in this thread, so the
    # services' socket events (async_to_sync) can't be sent from here.
    for author, text in (
        ("customer", "Where is my parcel? I ordered a smart plug last week."),
        ("bot", "Track it with the link in your shipping email."),
        ("customer", REFUND),
        ("bot", "Send it back within 30 days and we refund you."),
        ("customer", BROKEN),
    ):
        Turn.objects.create(
            conversation=conversation,
            author=author,
            text=text,
            status="done" if author == "bot" else "",
        )

    context = agent_context(chromium, base, alice_agent)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{base}/agent/conversations/{conversation.pk}/")
        page.wait_for_selector(".connection-status[data-state=connected]")

        page.get_by_role("button", name="Summarise").click()
        summary = page.get_by_role("region", name="Summary")
        summary.wait_for()
        lines = summary.inner_text().splitlines()
        assert lines[0] == f"Latest problem: {BROKEN}"
        assert "Earlier topics:" in lines

        page.get_by_role("button", name="Suggest reply").click()
        page.get_by_text("Suggested reply is in the reply box").wait_for()
        draft = page.get_by_role("textbox", name="Reply").input_value()
        assert "The warranty covers faults" in draft
        sources = page.get_by_role("list", name="Sources of the suggested reply")
        link = sources.get_by_role("link", name="What does the warranty cover?")
        assert link.get_attribute("href") == WARRANTY_URL
        assert link.get_attribute("rel") == "noopener noreferrer"
    finally:
        context.close()
