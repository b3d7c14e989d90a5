"""Chromium against the real stack (uvicorn, a Celery worker, Redis, the offline answerer): an
operator tries a draft in the playground, watches the reply stream in, and sees what was sent,
the tokens and the latency. No customer sees it and nothing is stored as a turn."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Turn
from studio import services
from tests import personas
from tests.fixtures_kb import parcels_article
from tests.inbox.test_inbox_browser import agent_context
from tests.markdown_replies import (
    MARKDOWN_REPLY,
    RUNNABLE,
    XSS_REPLY,
    XSS_REPLY_SHOWN,
    assert_rendered_as_markdown,
    model_env,
    tokens,
)

olivia_operator = personas.olivia_operator

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="what the studio's pages draw; the runs behind them have tests on both paths"
    ),
]


# Slow words, so the page is seen mid-reply.
OFFLINE_APP = {"word_delay_ms": 60}


@pytest.fixture
def stack(offline_app):
    return offline_app


def test_the_playground_streams_a_drafts_reply_and_shows_what_was_sent(
    chromium, stack, olivia_operator
):
    draft = services.create_draft(
        by=olivia_operator,
        name="Try-out",
        provider="offline",
        system_prompt="You are the careful helper of {company}.",
    )
    context = agent_context(chromium, stack, olivia_operator)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{stack}/studio/playground/")
        page.wait_for_selector(".connection-status[data-state=connected]")
        page.get_by_label("Version").select_option(str(draft.pk))
        page.get_by_label("Customer message").fill("How do I return an item?")
        page.get_by_role("button", name="Send").click()

        reply = page.get_by_role("log", name="Reply")
        page.wait_for_function(
            "() => { const r = document.querySelector('.reply-text');"
            " return r.dataset.state === 'streaming' && r.textContent.trim().length > 0; }"
        )
        partial = reply.inner_text().strip()
        page.wait_for_selector(".reply-text[data-state=done]")
        final = reply.inner_text()
        # Rendered as Markdown: the text so far is the start of the final text (a half-written
        # list item may still change shape, so only the first words are compared).
        assert partial and final.startswith(partial[:20]) and len(final) > len(partial)
        assert "return" in final.lower()

        details = page.get_by_role("region", name="What was sent")
        details.wait_for()
        assert int(page.locator('[data-field="completion_tokens"]').inner_text()) > 0
        assert page.locator('[data-field="ttft"]').inner_text().endswith(" ms")
        assert page.locator('[data-field="total"]').inner_text().endswith(" ms")
        assert page.locator('[data-field="cost"]').inner_text()
        assert page.locator('[data-field="abstained"]').inner_text() == "no"
        prompt = page.get_by_role("list", name="Prompt messages")
        system = prompt.locator('[data-role="system"]').inner_text()
        # The template, filled in, with the retrieved passages after it.
        assert "You are the careful helper of Brightwave." in system
        assert "[1] " in system
        assert (
            prompt.locator('[data-role="user"]')
            .last.inner_text()
            .endswith("How do I return an item?")
        )
    finally:
        context.close()
    assert not Turn.objects.exists() and not Conversation.objects.exists()


def test_an_evaluation_run_shows_live_progress_then_the_scores(chromium, stack, olivia_operator):
    from studio.models import EvalRun
    from studio.models import TestCase as Case
    from studio.models import TestSet as CaseSet

    version = services.create_draft(by=olivia_operator, name="Evaluated", provider="offline")
    test_set = CaseSet.objects.create(name="Returns")
    for message in ("How do I return an item?", "Can I exchange an item?", "Track my order"):
        Case.objects.create(test_set=test_set, message=message, must_not_contain=["lawyer"])
    context = agent_context(chromium, stack, olivia_operator)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{stack}/studio/evaluations/")
        page.get_by_label("Version", exact=True).select_option(str(version.pk))
        page.get_by_label("Test set", exact=True).select_option(str(test_set.pk))
        page.get_by_role("button", name="Run").click()
        progress = page.get_by_role("progressbar", name="Evaluation progress")
        progress.wait_for()
        page.wait_for_selector(".connection-status[data-state=connected]")
        # The socket feeds the bar; when the run is done the page shows the scores.
        page.get_by_role("table", name="Scores").wait_for()
        assert page.locator("#run-progress").get_attribute("value") == "3"
        assert "Avoids phrases" in page.get_by_role("table", name="Scores").inner_text()
        assert page.get_by_role("table", name="Results per case").locator("tbody tr").count() == 3
    finally:
        context.close()
    run = EvalRun.objects.get()
    assert run.status == "done" and run.scores["must_not_contain"] == 1.0


@pytest.fixture
def model_stack(fake_llm, asgi_server, celery_worker):
    """The fake model answers (what a test scripts); one help article, so that a question about
    parcels reaches it."""
    parcels_article()
    celery_worker(**model_env(fake_llm))
    return asgi_server(**model_env(fake_llm))


def test_the_playground_renders_the_reply_as_markdown_and_never_runs_its_html(
    chromium, model_stack, fake_llm, olivia_operator
):
    draft = services.create_draft(by=olivia_operator, name="Markdown", provider="openai")
    fake_llm.script(tokens(MARKDOWN_REPLY), tokens(XSS_REPLY))
    context = agent_context(chromium, model_stack, olivia_operator)
    dialogs: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{model_stack}/studio/playground/")
        page.wait_for_selector(".connection-status[data-state=connected]")
        page.get_by_label("Version").select_option(str(draft.pk))
        reply = page.get_by_role("log", name="Reply")

        page.get_by_label("Customer message").fill("Do you ship to Norway?")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector(".reply-text[data-state=done] table")
        assert_rendered_as_markdown(reply)

        page.get_by_role("button", name="Send").click()
        page.wait_for_selector(".reply-text[data-state=done]:not(:has(table))")
        assert reply.inner_text() == XSS_REPLY_SHOWN
        for label in ("this link", "that link"):
            reply.get_by_text(label).click()
        page.wait_for_timeout(300)
        assert reply.locator(RUNNABLE).count() == 0
        assert page.evaluate("window.__pwned") is None
        assert dialogs == []
    finally:
        context.close()
