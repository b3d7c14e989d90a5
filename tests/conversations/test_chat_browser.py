"""A real Chromium (Debian's package, driven by Playwright) against the real stack: uvicorn,
a Celery worker process, Redis and the database."""

from __future__ import annotations

import pytest

from conversations.escalation import escalate
from conversations.events import ReplyPublisher
from conversations.models import Turn
from conversations.recovery import requeue
from conversations.replies import write_reply
from tests.conftest import store_page_conversation
from tests.fixtures_kb import parcels_article
from tests.markdown_replies import (
    MARKDOWN_REPLY,
    RUNNABLE,
    XSS_REPLY,
    XSS_REPLY_SHOWN,
    assert_rendered_as_markdown,
    model_env,
    shown,
    tokens,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


# The whole app with the offline answerer, slowed so streaming can be watched.
OFFLINE_APP = {"word_delay_ms": 60}


@pytest.fixture
def stack(offline_app):
    return offline_app


@pytest.fixture
def page(chromium, stack):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{stack}/chat/")
    yield page
    context.close()


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def bot_messages(page):
    return page.get_by_role("log").locator('[data-author="bot"]')


def test_a_customer_watches_the_reply_stream_in_word_by_word(page):
    send(page, "How do I return an item?")
    customer = page.get_by_role("log").locator('[data-author="customer"]').last
    assert customer.locator(".text").inner_text() == "How do I return an item?"

    bot = bot_messages(page).last
    indicator = page.locator(".typing-indicator")
    page.wait_for_function(
        """() => { const m = [...document.querySelectorAll('[role=log] [data-author=bot]')].pop();
                   return m && m.dataset.status === 'streaming'
                          && m.querySelector('.text').textContent.trim().length > 0; }"""
    )
    partial = bot.locator(".text").inner_text()
    assert indicator.is_visible()

    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    final = bot.locator(".text").inner_text()
    stored = Turn.objects.get(author="bot")
    assert stored.status == "done"
    assert final == shown(page, stored.text)  # its Markdown rendered
    assert len(partial) < len(final) and final.startswith(partial.strip()[:20])
    assert bot.locator(".sources a").first.get_attribute("href").startswith("https://")
    assert indicator.is_hidden()


def test_the_conversation_is_still_there_after_a_reload(page):
    send(page, "How do I reset my password?")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    before = page.get_by_role("log").inner_text()
    page.reload()
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    assert page.get_by_role("log").locator("[data-author]").count() == 2
    assert page.get_by_role("log").inner_text() == before


def test_a_message_written_before_the_page_script_runs_is_sent_once_it_runs(chromium, stack):
    # A slow network: chat.js runs 1.5 s after the page is shown and can be typed in. A click
    # on Send before then must not submit the form natively (a reload that loses the message
    # and puts its text in the address).
    context = chromium.new_context()

    def held_back(route):
        script = route.fetch().text()
        route.fulfill(body=f"setTimeout(() => {{{script}}}, 1500);", content_type="text/javascript")

    context.route("**/static/chat/chat.js*", held_back)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{stack}/chat/")
        page.get_by_role("textbox", name="Message").fill("How do I return an item?")
        send_button = page.get_by_role("button", name="Send")
        assert send_button.is_disabled()
        send_button.click()  # waits until the script has enabled it
        page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
        assert list(Turn.objects.filter(author="customer").values_list("text", flat=True)) == [
            "How do I return an item?"
        ]
        assert "message=" not in page.url
    finally:
        context.close()


def test_html_in_a_message_is_shown_as_text_and_never_runs(page):
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
    send(page, payload)
    customer = page.get_by_role("log").locator('[data-author="customer"]').last
    page.wait_for_selector('[role=log] [data-author=customer][data-status="sent"]')
    assert customer.locator(".text").inner_text() == payload
    assert page.get_by_role("log").locator("img, script").count() == 0
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    page.reload()  # and again when it comes back from the server as history
    page.wait_for_selector("[role=log] [data-author=customer]")
    assert page.get_by_role("log").locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_a_reply_survives_the_server_restarting_mid_stream(page, module_app):
    send(page, "How long does shipping take?")
    page.wait_for_function(
        """() => { const m = [...document.querySelectorAll('[role=log] [data-author=bot]')].pop();
                   return m && m.dataset.status === 'streaming'
                          && m.querySelector('.text').textContent.length > 0; }"""
    )
    module_app.restart_web()  # every socket drops

    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]', timeout=30_000)
    stored = Turn.objects.get(author="bot")
    assert bot_messages(page).last.locator(".text").inner_text() == shown(page, stored.text)
    assert bot_messages(page).count() == 1
    assert page.locator(".typing-indicator").is_hidden()


def test_an_oversize_message_is_refused_in_the_page(page):
    page.get_by_role("textbox", name="Message").fill("x" * 4001)
    page.get_by_role("button", name="Send").click()
    assert page.get_by_role("log").locator('[data-author="customer"]').count() == 0
    assert Turn.objects.count() == 0


@pytest.fixture
def browser_options():
    """Playwright context options for web_only_page (a test may parametrize them)."""
    return {}


@pytest.fixture
def web_only_page(chromium, asgi_server, browser_options):
    """The page against a web server with no worker: the test plays the worker itself."""
    base = asgi_server(LLM_PROVIDER="offline")
    context = chromium.new_context(**browser_options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    store_page_conversation(page)
    yield page
    context.close()


def test_a_reply_whose_last_live_frame_was_lost_still_finishes_in_the_page(web_only_page):
    """Live frames go over Redis pub/sub, which may drop one; the page notices the reply went
    quiet and fetches the rest from the reply's replay log."""
    import threading

    from django.db import connection

    from conversations import events, services
    from conversations.models import Conversation

    def worker_that_loses_the_done_frame() -> None:
        try:
            conversation = Conversation.objects.get()
            posted = services.post_customer_message(conversation, "lossy-1", "Hello?")
            reply = Turn.claim_reply(posted.reply.pk, lease_s=60)
            publisher = events.ReplyPublisher(reply)
            publisher.start()
            publisher.delta("Hello")
            reply.finish_reply(status="done", text="Hello there, how can I help?")
            publisher.channel = "nobody-listens-here"  # the done frame's PUBLISH is lost
            publisher.done(reply)
        finally:
            connection.close()

    # The test thread hosts Playwright's event loop: server-side work runs beside it.
    worker = threading.Thread(target=worker_that_loses_the_done_frame)
    worker.start()
    worker.join(timeout=20)
    page = web_only_page
    page.wait_for_selector('[role=log] [data-author=bot][data-status="streaming"]')
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]', timeout=15_000)
    assert bot_messages(page).last.locator(".text").inner_text() == "Hello there, how can I help?"
    assert page.locator(".typing-indicator").is_hidden()


def test_a_reply_waiting_for_its_turn_says_one_moment_until_it_starts_also_after_a_reload(
    web_only_page,
):
    """Many customers at once: the reply waits for its turn with the model (the model's
    budget). The page shows the typing indicator and the "one moment" line in the reply's place;
    a reload resumes the reply and shows the line again; the answer's first words replace it."""
    import threading

    from django.db import connection

    from bot.wording import ENGLISH
    from conversations import events, services
    from conversations.models import Conversation

    turn_comes = threading.Event()

    def worker_waiting_for_its_turn() -> None:
        try:
            conversation = Conversation.objects.get()
            posted = services.post_customer_message(conversation, "wait-1", "Where is my parcel?")
            reply = Turn.claim_reply(posted.reply.pk, lease_s=60)
            publisher = events.ReplyPublisher(reply)
            publisher.start()
            publisher.waiting(ENGLISH.one_moment, 12)
            turn_comes.wait(timeout=60)
            publisher.delta("Your parcel")
            reply.finish_reply(status="done", text="Your parcel is on its way.")
            publisher.done(reply)
        finally:
            connection.close()

    worker = threading.Thread(target=worker_waiting_for_its_turn)
    worker.start()
    page = web_only_page
    line = page.locator("[role=log] [data-author=bot] .message__waiting")
    try:
        line.wait_for(state="visible")
        assert line.inner_text() == ENGLISH.one_moment
        assert page.locator(".typing-indicator").is_visible()

        page.reload()
        page.wait_for_selector(".connection-status[data-state=connected]")
        line.wait_for(state="visible")  # the resume replays it
    finally:
        turn_comes.set()
        worker.join(timeout=20)
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    assert bot_messages(page).last.locator(".text").inner_text() == "Your parcel is on its way."
    assert line.is_hidden()
    assert page.locator(".typing-indicator").is_hidden()


def test_a_reply_withdrawn_because_the_customer_asked_for_a_person_is_never_shown(web_only_page):
    """The customer asks for a person before any worker claims the queued reply: the reply is
    withdrawn, the page drops its placeholder and the typing indicator, also after a reload."""
    import threading

    from django.db import connection

    from conversations.models import Conversation

    page = web_only_page
    send(page, "Where is my parcel?")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="queued"]')
    page.wait_for_selector(".typing-indicator", state="visible")

    def escalate_then_claim() -> None:
        try:
            conversation = Conversation.objects.get()
            escalate(conversation, "customer_request")
            write_reply(Turn.objects.get(author="bot").pk)
        finally:
            connection.close()

    worker = threading.Thread(target=escalate_then_claim)
    worker.start()
    worker.join(timeout=20)
    assert Turn.objects.get(author="bot").status == "withdrawn"
    withdrawn = '[role=log] [data-author=bot][data-status="withdrawn"]'
    page.wait_for_selector(withdrawn, state="attached")
    page.wait_for_selector(".typing-indicator", state="hidden")
    assert bot_messages(page).count() == 1 and bot_messages(page).first.is_hidden()

    page.reload()
    page.wait_for_selector(".connection-status[data-state=connected]")
    page.wait_for_selector(withdrawn, state="attached")
    assert bot_messages(page).first.is_hidden()
    assert page.locator(".typing-indicator").is_hidden()


# --- Replies as Markdown (static/common/markdown.js) -------------------------------------------


def in_thread(work) -> None:
    """Server-side work (the ORM, the channel layer) beside Playwright's event loop."""
    import threading

    from django.db import connection

    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=20)


def start_streaming_reply(state: dict, client_id: str, question: str) -> None:
    """Play the worker: the page's customer asks `question`, and its reply is claimed and
    started; state gets the "reply" and its "publisher" (call in_thread)."""
    from conversations import events, services
    from conversations.models import Conversation

    posted = services.post_customer_message(Conversation.objects.get(), client_id, question)
    state["reply"] = Turn.claim_reply(posted.reply.pk, lease_s=60)
    state["publisher"] = events.ReplyPublisher(state["reply"])
    state["publisher"].start()


@pytest.fixture
def model_stack(fake_llm, asgi_server, celery_worker):
    """The whole app answering through the fake model, which replies with what a test scripts;
    one help article, so that a question about parcels reaches the model."""
    parcels_article()
    celery_worker(**model_env(fake_llm))
    return asgi_server(**model_env(fake_llm))


@pytest.fixture
def model_page(chromium, model_stack):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{model_stack}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    yield page
    context.close()


def test_it_renders_a_bot_reply_list_bold_link_and_table_as_markup(model_page, fake_llm):
    fake_llm.script(tokens(MARKDOWN_REPLY))
    page = model_page
    send(page, "Do you ship to Norway?")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    assert Turn.objects.get(author="bot").text == MARKDOWN_REPLY

    for when in ("live", "after a reload"):
        if when == "after a reload":
            page.reload()
            page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
        bot = bot_messages(page).last
        assert_rendered_as_markdown(bot.locator(".text"))
        # The citation inside the list item still leads to its source under the answer.
        marker = bot.locator(".text li a.citation")
        assert marker.inner_text() == "[1]"
        marker.click()
        source = bot.get_by_role("list", name="Sources").get_by_role("listitem").first
        assert source.evaluate("item => item === document.activeElement"), when
        assert "Where is my parcel?" in source.inner_text()


# With less motion each piece shows at once, so each state of the half-written reply is seen.
@pytest.mark.parametrize("browser_options", [{"reduced_motion": "reduce"}])
def test_a_streaming_reply_shows_its_markdown_so_far_and_the_table_once_it_is_whole(
    web_only_page,
):
    page = web_only_page
    state = {}

    def start() -> None:
        start_streaming_reply(state, "md-1", "Do you ship to Norway?")
        state["publisher"].delta("We ship to Norway with DHL:\n\n- **Pack the par")

    in_thread(start)
    text = bot_messages(page).last.locator(".text")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="streaming"] li')
    assert text.locator("li").inner_text() == "**Pack the par"  # not bold until it is closed
    assert text.locator("strong").count() == 0

    in_thread(lambda: state["publisher"].delta("cel** well\n\n| Destination | Da"))
    page.wait_for_function(
        "() => document.querySelector('[role=log] [data-author=bot] strong') !== null"
    )
    assert text.locator("strong").inner_text() == "Pack the parcel"
    assert text.locator("table").count() == 0  # half a table is text so far
    assert "| Destination | Da" in text.inner_text()
    # The bubble still fits the log: nothing of the half-written reply stretches it.
    log_box = page.get_by_role("log").bounding_box()
    bubble = bot_messages(page).last.bounding_box()
    assert bubble["x"] + bubble["width"] <= log_box["x"] + log_box["width"]

    in_thread(lambda: state["publisher"].delta("ys |\n|---|---|\n| Norway | 4 to"))
    page.wait_for_selector("[role=log] [data-author=bot] table")
    assert text.locator("td").first.inner_text() == "Norway"

    def finish() -> None:
        reply = state["reply"]
        final = "We ship to Norway with DHL:\n\n- **Pack the parcel** well\n\n" + (
            "| Destination | Days |\n|---|---|\n| Norway | 4 to 6 |\n"
        )
        reply.finish_reply(status="done", text=final)
        state["publisher"].done(reply)

    in_thread(finish)
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    assert text.locator("td").all_inner_texts() == ["Norway", "4 to 6"]
    assert text.locator("th").all_inner_texts() == ["Destination", "Days"]


def test_a_piece_that_brings_much_text_at_once_is_written_out_over_several_frames(web_only_page):
    """Under load a reply's pieces come fuller and less often (bot/run.py); the page writes
    each out over the next animation frames, so the reply still reads as a steady flow."""
    page = web_only_page
    state = {}
    piece = "Parcels to Norway travel with DHL and take four to six working days. " * 6

    in_thread(lambda: start_streaming_reply(state, "smooth-1", "Norway?"))
    page.wait_for_selector('[role=log] [data-author=bot][data-status="queued"]')
    # The length of the reply's text on screen at every animation frame from now on.
    page.evaluate(
        """() => { window.__lengths = [];
                   const sample = () => {
                     const m = [...document.querySelectorAll('[role=log] [data-author=bot]')].pop();
                     window.__lengths.push(m.querySelector('.text').textContent.length);
                     requestAnimationFrame(sample); };
                   requestAnimationFrame(sample); }"""
    )
    in_thread(lambda: state["publisher"].delta(piece))
    page.wait_for_function(
        """(whole) => {
             const m = [...document.querySelectorAll('[role=log] [data-author=bot]')].pop();
             return m.querySelector('.text').textContent.trim() === whole; }""",
        arg=piece.strip(),
    )
    lengths = page.evaluate("window.__lengths")
    written_out = sorted({n for n in lengths if 0 < n < len(piece.strip())})
    assert len(written_out) >= 5, lengths  # not all at once
    growing = [n for n in lengths if n > 0]
    assert growing == sorted(growing)  # never back


def test_script_in_a_bot_or_agent_reply_never_runs_and_shows_as_text(model_page, fake_llm):
    from conversations.models import Conversation
    from inbox import services as inbox_services
    from tests.personas import make_user

    dialogs: list[str] = []
    page = model_page
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    fake_llm.script(tokens(XSS_REPLY))
    send(page, "Do you ship to Norway?")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
    assert Turn.objects.get(author="bot").text == XSS_REPLY

    agent = make_user("anna", "Anna", None)
    in_thread(lambda: inbox_services.agent_reply(Conversation.objects.get().pk, agent, XSS_REPLY))
    page.get_by_role("log").locator('[data-author="agent"]').wait_for()

    for when in ("live", "after a reload"):
        if when == "after a reload":
            page.reload()
            page.wait_for_selector("[role=log] [data-author=agent]")
        for author in ("bot", "agent"):
            text = page.get_by_role("log").locator(f'[data-author="{author}"] .text').last
            assert text.inner_text() == XSS_REPLY_SHOWN, (author, when)
            for link in text.locator("a").all():
                assert link.get_attribute("href").startswith("https:"), (author, when)
        page.get_by_text("this link").first.click()
        page.get_by_text("that link").first.click()
        page.wait_for_timeout(300)
        assert page.get_by_role("log").locator(RUNNABLE).count() == 0, when
        assert page.evaluate("window.__pwned") is None, when
        assert dialogs == [], when


def test_the_widget_renders_a_bot_reply_as_markdown_in_its_frame(chromium, model_stack, fake_llm):
    """The widget on a shop's page (a 390 px phone): its iframe is the chat page, so replies are
    rendered there the same way, and they fit the frame."""
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        shop = f"{model_stack}/shop/"
        snippet = (
            f'<script src="{model_stack}/static/chat/widget.js" data-support-bot async></script>'
        )
        page.route(
            shop,
            lambda route: route.fulfill(
                content_type="text/html", body=f"<!doctype html><title>Shop</title>{snippet}"
            ),
        )
        page.goto(shop)
        page.get_by_role("button", name="Open chat").click()
        frame = page.frame_locator("#support-bot-frame")
        frame.locator(".connection-status[data-state=connected]").wait_for()

        fake_llm.script(tokens(MARKDOWN_REPLY))
        frame.get_by_role("textbox", name="Message").fill("Do you ship to Norway?")
        frame.get_by_role("button", name="Send").click()
        frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        bot = frame.locator('[role=log] [data-author="bot"]').last
        assert_rendered_as_markdown(bot.locator(".text"))
        frame_box = page.locator("#support-bot-frame").bounding_box()
        bubble = bot.bounding_box()
        assert bubble["x"] >= frame_box["x"]
        assert bubble["x"] + bubble["width"] <= frame_box["x"] + frame_box["width"]
    finally:
        context.close()


def test_a_message_the_server_refuses_is_marked_not_sent_and_never_re_sent(web_only_page):
    """A lone surrogate (half an emoji) once crashed the socket: the page reconnected and sent
    the message again, for ever. Now the server refuses it and the page shows why, once."""
    page = web_only_page
    page.evaluate(
        """() => { window.__messages = 0; const send = WebSocket.prototype.send;
                   WebSocket.prototype.send = function (data) {
                     if (JSON.parse(data).type === "message") window.__messages += 1;
                     return send.call(this, data); }; }"""
    )
    page.get_by_role("textbox", name="Message").evaluate("(box) => { box.value = 'x\\ud800y'; }")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector('[role=log] [data-author=customer][data-status="failed"]')
    customer = page.get_by_role("log").locator('[data-author="customer"]').last
    assert "cannot be sent" in customer.locator(".message__error").inner_text()
    page.wait_for_timeout(3_000)  # longer than the first reconnect's backoff
    assert page.evaluate("window.__messages") == 1
    assert page.locator(".connection-status").get_attribute("data-state") == "connected"
    assert Turn.objects.count() == 0


def test_a_reply_taken_over_after_redis_lost_its_log_replaces_the_half_reply_on_the_page(
    chromium, asgi_server
):
    """No worker here: the test writes the reply's frames itself, as two workers would."""
    from support_bot.redis_clients import key, sync_client

    server = asgi_server(LLM_PROVIDER="offline")
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{server}/chat/")
    send(page, "Where is my parcel?")
    page.wait_for_selector('[role=log] [data-author=bot][data-status="queued"]')
    reply = Turn.objects.get(author="bot")

    first = Turn.claim_reply(reply.pk, lease_s=5)
    lost = ReplyPublisher(first)
    lost.start()
    lost.delta("Your parcel left")
    bot = bot_messages(page).last
    page.wait_for_function(
        "() => document.querySelector('[role=log] [data-author=bot] .text')"
        ".textContent.includes('Your parcel left')"
    )
    # Its worker dies and Redis restarts empty; the sweeper gives the reply to another worker.
    sync_client().delete(key("reply", reply.pk))
    assert requeue(reply.pk, reason="lease lapsed")
    second = Turn.claim_reply(reply.pk, lease_s=5)
    taken_over = ReplyPublisher(second)
    taken_over.start()
    taken_over.delta("It arrives tomorrow.")

    page.wait_for_function(
        "() => document.querySelector('[role=log] [data-author=bot] .text')"
        ".textContent.includes('It arrives tomorrow.')"
    )
    assert "Your parcel left" not in bot.locator(".text").inner_text()
    assert bot.get_attribute("data-status") == "streaming"
    context.close()
