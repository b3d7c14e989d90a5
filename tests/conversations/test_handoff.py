"""Handing a conversation to a person: escalation rules, the abstain streak, business hours,
the customer's email address and rating, and the customer's websocket frames for them.

Personas: alice is the customer; bob is another customer who must see none of it."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from bot.wording import ENGLISH
from conversations import events, services
from conversations.business_hours import availability, describe_opening, support_zone
from conversations.contact import save_contact_email
from conversations.errors import CustomerRequestRefused as HandoffError
from conversations.escalation import after_bot_reply, escalate
from conversations.models import BusinessHours, Conversation, EscalationRule, Turn
from conversations.ratings import rate
from conversations.replies import write_reply
from conversations.state import conversation_changed, state_frame
from tests.conftest import open_chat, receive_until

Status = Conversation.Status


@pytest.fixture(autouse=True)
def default_rules(request: pytest.FixtureRequest) -> None:
    """The rules migration 0003 seeds. A transactional test (any module's) empties every
    table when it ends, so they are put back when missing."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
    from django.apps import apps

    if not EscalationRule.objects.exists():
        seed = importlib.import_module("conversations.migrations.0003_default_escalation_rules")
        seed.add_rules(apps, SimpleNamespace(connection=connection))  # as migrate's editor


def post(conversation: Conversation, text: str) -> services.PostedMessage:
    return services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)


def refreshed(conversation: Conversation) -> Conversation:
    conversation.refresh_from_db()
    return conversation


def system_texts(conversation: Conversation) -> list[str]:
    return list(conversation.turns.filter(author="system").values_list("text", flat=True))


def resolved(conversation: Conversation) -> Conversation:
    Conversation.objects.filter(pk=conversation.pk).update(
        status=Status.RESOLVED, resolved_at=timezone.now()
    )
    return refreshed(conversation)


def local_now() -> datetime:
    return timezone.now().astimezone(support_zone())


# --- Escalation by the customer's words -------------------------------------------------------


@pytest.mark.django_db
def test_it_hands_over_when_the_customer_asks_for_a_human_and_queues_no_reply(
    alice_conversation, django_capture_on_commit_callbacks, monkeypatch
):
    from conversations import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.generate_reply, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        posted = post(alice_conversation, "I want to speak to a human, please")

    assert posted.reply is None and posted.ack_frame()["reply_id"] is None
    conversation = refreshed(alice_conversation)
    assert (conversation.status, conversation.escalation_reason) == ("pending", "customer_request")
    assert conversation.escalated_at is not None
    assert [t.author for t in conversation.turns.all()] == ["customer", "system"]
    assert system_texts(conversation) == [ENGLISH.person_will_join]
    assert queued == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        "Kann ich bitte mit einem Menschen sprechen?",  # German
        "Je veux PARLER A UN HUMAIN",  # French, without the accent of the rule
        "¿Puedo hablar con una persona?",  # Spanish
        "Please CONNECT me with a real, live person!",  # "connect me * person"
        "can you connect me to a person",
    ],
)
def test_it_recognises_a_request_for_a_person_in_any_supported_language(alice_conversation, text):
    assert post(alice_conversation, text).reply is None
    assert refreshed(alice_conversation).escalation_reason == "customer_request"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        "How do I connect my doorbell?",
        "Is the person detection of the camera any good?",
        "connect me",  # a "*" rule needs the words on both sides
        "I love your scampi",  # "scam" matches whole words only
        "humanity",
    ],
)
def test_it_keeps_answering_ordinary_messages(alice_conversation, text):
    posted = post(alice_conversation, text)
    assert posted.reply is not None and posted.reply.status == "queued"
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_it_hands_over_an_angry_customer(alice_conversation):
    assert post(alice_conversation, "This is RIDICULOUS. Three weeks!").reply is None
    assert refreshed(alice_conversation).escalation_reason == "angry"


@pytest.mark.django_db
def test_it_applies_an_operators_new_keyword_at_once(alice_conversation):
    assert post(alice_conversation, "I need a refund").reply is not None
    EscalationRule.objects.create(kind="keyword", pattern="refund*")

    assert post(alice_conversation, "Where are my REFUNDS?").reply is None
    assert refreshed(alice_conversation).escalation_reason == "keyword"


@pytest.mark.django_db
def test_it_ignores_a_disabled_rule(alice_conversation):
    EscalationRule.objects.filter(pattern="speak to a human").update(enabled=False)
    assert post(alice_conversation, "Can I speak to a human?").reply is not None
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_it_applies_an_edited_rule_to_the_next_message(alice_conversation):
    rule = EscalationRule.objects.create(kind="keyword", pattern="lawyer")
    rule.pattern = "attorney"
    rule.save()
    assert post(alice_conversation, "my lawyer says hi").reply is not None
    assert post(alice_conversation, "my attorney says hi").reply is None


# --- Escalation when the bot can't answer ------------------------------------------------------


@pytest.fixture
def offline(settings):
    """The offline answerer with an empty knowledge base: every reply abstains."""
    settings.LLM_PROVIDER = "offline"
    settings.OFFLINE_WORD_DELAY_MS = 0


def ask_and_answer(conversation: Conversation, text: str) -> Turn:
    posted = post(conversation, text)
    assert posted.reply is not None
    write_reply(posted.reply.pk)
    return Turn.objects.get(pk=posted.reply.pk)


@pytest.mark.django_db
def test_it_hands_over_after_the_bot_could_not_answer_twice_in_a_row(alice_conversation, offline):
    first = ask_and_answer(alice_conversation, "What colour is the moon on Tuesdays?")
    assert first.abstained and refreshed(alice_conversation).status == "open"

    second = ask_and_answer(alice_conversation, "And on Wednesdays?")
    assert second.abstained
    conversation = refreshed(alice_conversation)
    assert (conversation.status, conversation.escalation_reason) == ("pending", "abstained")
    assert system_texts(conversation) == [ENGLISH.person_will_join]
    assert post(conversation, "Hello?").reply is None


@pytest.mark.django_db
def test_it_restarts_the_abstain_streak_after_an_answer(alice_conversation):
    def bot_reply(abstained: bool) -> Turn:
        return Turn.objects.create(
            conversation=alice_conversation, author="bot", status="done", abstained=abstained
        )

    bot_reply(True)
    bot_reply(False)
    assert not after_bot_reply(bot_reply(True))
    assert refreshed(alice_conversation).status == "open"
    assert after_bot_reply(bot_reply(True))
    assert refreshed(alice_conversation).status == "pending"


@pytest.mark.django_db
def test_it_takes_the_abstain_streak_from_its_rule(alice_conversation):
    def abstained_reply() -> Turn:
        return Turn.objects.create(
            conversation=alice_conversation, author="bot", status="done", abstained=True
        )

    EscalationRule.objects.filter(kind="abstain_streak").update(threshold=3)
    abstained_reply()
    assert not after_bot_reply(abstained_reply())
    assert after_bot_reply(abstained_reply())

    Conversation.objects.filter(pk=alice_conversation.pk).update(status="open")
    EscalationRule.objects.filter(kind="abstain_streak").update(enabled=False)
    assert not after_bot_reply(abstained_reply())


# --- While a person has it, the bot is quiet ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["pending", "snoozed"])
def test_it_keeps_the_bot_quiet_while_a_person_has_the_conversation(
    alice_conversation, status, django_capture_on_commit_callbacks, monkeypatch
):
    from conversations import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.generate_reply, "delay", queued.append)
    agent = get_user_model().objects.create_user("anna", first_name="Anna")
    Conversation.objects.filter(pk=alice_conversation.pk).update(status=status, assignee=agent)

    # The socket's copy of the conversation is from before: the service reads the row.
    assert alice_conversation.status == "open"
    with django_capture_on_commit_callbacks(execute=True):
        posted = post(alice_conversation, "Are you there?")

    assert posted.reply is None and queued == []
    assert not Turn.objects.filter(author="bot").exists()
    assert refreshed(alice_conversation).status == "pending"  # snoozed: back to the team


@pytest.mark.django_db
def test_it_records_when_the_customer_last_wrote(alice_conversation):
    before = timezone.now()
    post(alice_conversation, "Hello")
    conversation = refreshed(alice_conversation)
    assert conversation.last_customer_message_at >= before
    assert conversation.last_message_at == conversation.last_customer_message_at


@pytest.mark.django_db
def test_it_reopens_a_resolved_conversation_for_the_bot_when_the_customer_writes(
    alice_conversation,
):
    resolved(alice_conversation)
    posted = post(alice_conversation, "One more question")
    assert posted.reply is not None
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_it_escalates_once_however_often_asked(alice_conversation):
    with_person = escalate(alice_conversation, "keyword")
    again = escalate(alice_conversation, "customer_request")
    assert (with_person, again) == (True, False)
    conversation = refreshed(alice_conversation)
    assert conversation.escalation_reason == "keyword"
    assert len(system_texts(conversation)) == 1


# --- Business hours -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_says_a_person_will_join_within_business_hours(alice_conversation):
    today = local_now().weekday()
    BusinessHours.objects.create(weekday=today, opens=time(0, 0), closes=time(23, 59, 59, 999999))
    escalate(alice_conversation, "customer_request")
    assert system_texts(alice_conversation) == [ENGLISH.person_will_join]
    assert state_frame(alice_conversation.pk)["needs_email"] is False


@pytest.mark.django_db
def test_it_asks_for_an_email_and_names_the_next_opening_outside_business_hours(
    alice_conversation,
):
    in_two_days = (local_now() + timedelta(days=2)).weekday()
    BusinessHours.objects.create(weekday=in_two_days, opens=time(9, 0), closes=time(17, 0))
    escalate(alice_conversation, "customer_request")

    (notice,) = system_texts(alice_conversation)
    assert "email address" in notice
    assert f"on {ENGLISH.weekdays[in_two_days]} at 09:00" in notice
    assert state_frame(alice_conversation.pk)["needs_email"] is True

    save_contact_email(alice_conversation, "  alice@example.com ")
    assert refreshed(alice_conversation).contact_email == "alice@example.com"
    assert state_frame(alice_conversation.pk)["needs_email"] is False


@pytest.mark.django_db
def test_it_names_the_next_opening_in_words(settings):
    settings.SUPPORT_TIME_ZONE = "Europe/Amsterdam"
    zone = ZoneInfo("Europe/Amsterdam")
    for weekday in range(5):
        BusinessHours.objects.create(weekday=weekday, opens=time(9), closes=time(17))
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=zone)
    monday_early = datetime(2026, 11, 30, 7, 30, tzinfo=zone)
    tuesday_night = datetime(2026, 12, 1, 23, 0, tzinfo=zone)

    def when(now: datetime) -> str:
        hours = availability(now)
        assert not hours.open_now and hours.next_opening is not None
        return describe_opening(hours.next_opening, now)

    assert when(friday_evening) == "on Monday at 09:00 (Europe/Amsterdam time)"
    assert when(monday_early) == "today at 09:00 (Europe/Amsterdam time)"
    assert when(tuesday_night) == "tomorrow at 09:00 (Europe/Amsterdam time)"
    assert availability(datetime(2026, 11, 30, 9, 0, tzinfo=zone)).open_now
    # Business hours are in SUPPORT_TIME_ZONE: 08:30 UTC is 09:30 in Amsterdam.
    assert availability(datetime(2026, 11, 30, 8, 30, tzinfo=UTC)).open_now


@pytest.mark.django_db
def test_it_is_always_open_without_business_hours():
    assert availability().open_now


# --- The customer's email address -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "email", ["", "   ", "alice", "alice@", "a@b@c.com", None, 42, "x" * 250 + "@a.io"]
)
def test_it_refuses_an_invalid_email_address(alice_conversation, email):
    with pytest.raises(HandoffError) as refused:
        save_contact_email(alice_conversation, email)
    assert refused.value.code == "bad_email"
    assert refreshed(alice_conversation).contact_email == ""


@pytest.mark.django_db
def test_it_thanks_the_customer_for_their_email_once(alice_conversation):
    save_contact_email(alice_conversation, "alice@example.com")
    save_contact_email(alice_conversation, "alice@example.com")
    assert system_texts(alice_conversation) == ["Thanks! We'll answer you at alice@example.com."]


# --- Rating -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_takes_one_rating_of_a_resolved_conversation(alice_conversation):
    conversation = resolved(alice_conversation)
    assert state_frame(conversation.pk)["rating_requested"] is True

    rate(conversation, 4, "  Quick and kind. ")
    with pytest.raises(HandoffError) as second:
        rate(conversation, 1, "changed my mind")

    assert second.value.code == "already_rated"
    conversation = refreshed(conversation)
    assert (conversation.rating, conversation.rating_comment) == (4, "Quick and kind.")
    assert conversation.rated_at is not None
    state = state_frame(conversation.pk)
    assert (state["rating_requested"], state["rated"]) == (False, True)


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["open", "pending", "snoozed"])
def test_it_refuses_to_rate_a_conversation_that_is_not_resolved(alice_conversation, status):
    Conversation.objects.filter(pk=alice_conversation.pk).update(status=status)
    with pytest.raises(HandoffError) as refused:
        rate(alice_conversation, 5)
    assert refused.value.code == "not_resolved"
    assert refreshed(alice_conversation).rating is None


@pytest.mark.django_db
@pytest.mark.parametrize("score", [0, 6, -1, "5", 4.5, True, None])
def test_it_takes_only_a_whole_number_from_1_to_5_as_a_rating(alice_conversation, score):
    resolved(alice_conversation)
    with pytest.raises(HandoffError) as refused:
        rate(alice_conversation, score)
    assert refused.value.code == "bad_score"
    assert refreshed(alice_conversation).rated_at is None


@pytest.mark.django_db
def test_it_limits_the_rating_comment(alice_conversation):
    resolved(alice_conversation)
    with pytest.raises(HandoffError) as refused:
        rate(alice_conversation, 3, "x" * 2001)
    assert refused.value.code == "comment_too_long"
    rate(alice_conversation, 3, "x" * 2000)
    assert refreshed(alice_conversation).rating == 3


# --- The customer's socket ------------------------------------------------------------------------


def is_state(frame: dict) -> bool:
    return frame["type"] == "conversation.state"


@pytest.mark.django_db(transaction=True)
async def test_it_hands_over_on_talk_to_a_person_and_tells_every_socket(alice_conversation):
    first = await open_chat(alice_conversation.pk, alice_conversation.customer)
    second = await open_chat(alice_conversation.pk, alice_conversation.customer)
    assert first.snapshot["state"]["status"] == "open"

    await first.send_json_to({"type": "handoff"})
    for chat in (first, second):
        frames = await receive_until(chat, is_state)
        assert frames[-1] == {
            "type": "conversation.state",
            "status": "pending",
            "assignee_name": None,
            "escalation_reason": "customer_request",
            "needs_email": False,
            "rating_requested": False,
            "rated": False,
        }
        notices = [f["turn"] for f in frames if f["type"] == "turn"]
        assert [(t["author"], t["text"]) for t in notices] == [("system", ENGLISH.person_will_join)]

    # Asking again changes nothing, and says so to the one who asked.
    await first.send_json_to({"type": "handoff"})
    again = await first.receive_json_from(timeout=5)
    assert again["type"] == "conversation.state" and again["status"] == "pending"
    turns = await database_sync_to_async(list)(Turn.objects.filter(author="system"))
    assert len(turns) == 1
    await first.disconnect()
    await second.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_acknowledges_an_escalating_message_without_a_reply(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "m-1", "text": "real person pls"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    assert ack["reply_id"] is None and ack["turn_id"] > 0
    state = (await receive_until(chat, is_state))[-1]
    assert state["status"] == "pending" and state["escalation_reason"] == "customer_request"
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_asks_for_an_email_in_the_snapshot_outside_business_hours(alice_conversation):
    def closed_and_escalated() -> None:
        in_two_days = (local_now() + timedelta(days=2)).weekday()
        BusinessHours.objects.create(weekday=in_two_days, opens=time(9), closes=time(17))
        escalate(alice_conversation, "angry")

    await database_sync_to_async(closed_and_escalated)()
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    state = chat.snapshot["state"]
    assert (state["status"], state["needs_email"], state["escalation_reason"]) == (
        "pending",
        True,
        "angry",
    )

    await chat.send_json_to({"type": "contact", "email": "not an email"})
    error = await chat.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "bad_email")
    await chat.send_json_to({"type": "contact"})
    assert (await chat.receive_json_from(timeout=5))["code"] == "bad_email"

    await chat.send_json_to({"type": "contact", "email": "alice@example.com"})
    frames = await receive_until(chat, is_state)
    assert frames[-1]["needs_email"] is False
    stored = await database_sync_to_async(Conversation.objects.get)(pk=alice_conversation.pk)
    assert stored.contact_email == "alice@example.com"
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_takes_a_rating_over_the_socket_once(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "rate", "score": 5})
    assert (await chat.receive_json_from(timeout=5))["code"] == "not_resolved"

    await database_sync_to_async(resolved)(alice_conversation)
    for bad, code in [
        ({"score": 9}, "bad_score"),
        ({"score": "5"}, "bad_score"),
        ({}, "bad_score"),
        ({"score": 5, "comment": ["x"]}, "bad_comment"),
        ({"score": 5, "comment": "x" * 2001}, "comment_too_long"),
    ]:
        await chat.send_json_to({"type": "rate", **bad})
        error = await chat.receive_json_from(timeout=5)
        assert (error["type"], error["code"]) == ("error", code), bad

    await chat.send_json_to({"type": "rate", "score": 2, "comment": "Slow"})
    state = (await receive_until(chat, is_state))[-1]
    assert (state["rated"], state["rating_requested"]) == (True, False)
    await chat.send_json_to({"type": "rate", "score": 5})
    assert (await chat.receive_json_from(timeout=5))["code"] == "already_rated"

    stored = await database_sync_to_async(Conversation.objects.get)(pk=alice_conversation.pk)
    assert (stored.rating, stored.rating_comment) == (2, "Slow")
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_shows_the_customer_an_agent_joining_typing_and_writing(alice_conversation, bob):
    def agent_takes_over() -> Turn:
        agent = get_user_model().objects.create_user("anna.k", first_name="Anna")
        Conversation.objects.filter(pk=alice_conversation.pk).update(
            status="pending", assignee=agent
        )
        conversation_changed(alice_conversation.pk)
        turn = Turn.objects.create(
            conversation=alice_conversation, author="agent", agent=agent, text="Hi, Anna here"
        )
        events.send_turn_on_commit(turn)
        return turn

    bobs = await database_sync_to_async(Conversation.objects.create)(customer=bob)
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    outsider = await open_chat(bobs.pk, bob)

    await events.send_agent_typing(alice_conversation.pk, "Anna", True)
    typing = await chat.receive_json_from(timeout=5)
    assert typing == {"type": "typing", "author": "agent", "name": "Anna", "active": True}

    await database_sync_to_async(agent_takes_over)()
    frames = await receive_until(chat, lambda f: f["type"] == "turn")
    state = next(f for f in frames if is_state(f))
    assert (state["status"], state["assignee_name"]) == ("pending", "Anna")
    turn = frames[-1]["turn"]
    assert (turn["author"], turn["author_name"], turn["text"]) == ("agent", "Anna", "Hi, Anna here")

    assert await outsider.receive_nothing(timeout=0.3)
    await chat.disconnect()
    await outsider.disconnect()


# --- In a real browser ----------------------------------------------------------------------------


def on_the_server(work) -> None:
    """Run server-side work beside the test thread, which hosts Playwright's event loop."""
    import threading

    from django.db import connection

    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported in the test thread
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=20)
    assert not failures, failures


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_lets_a_customer_in_the_page_get_a_person_rate_and_start_again(chromium, asgi_server):
    from asgiref.sync import async_to_sync

    base = asgi_server(LLM_PROVIDER="offline")
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    status_line = page.locator(".handoff-status")

    page.get_by_role("button", name="Talk to a person").click()
    page.get_by_role("status").filter(has_text="Waiting for a person…").wait_for()
    notice = page.get_by_role("log").locator('[data-author="system"]').last
    assert notice.inner_text() == ENGLISH.person_will_join
    assert page.get_by_role("button", name="Talk to a person").is_hidden()
    conversation = Conversation.objects.get()

    def agent_joins_and_types() -> None:
        agent = get_user_model().objects.create_user("anna.k", first_name="Anna")
        Conversation.objects.filter(pk=conversation.pk).update(assignee=agent)
        conversation_changed(conversation.pk)
        async_to_sync(events.send_agent_typing)(conversation.pk, "Anna", True)

    on_the_server(agent_joins_and_types)
    page.get_by_role("status").filter(has_text="Anna from our team joined").wait_for()
    page.locator(".typing-indicator").filter(has_text="Anna is typing…").wait_for()

    def agent_writes() -> None:
        turn = Turn.objects.create(
            conversation=conversation,
            author="agent",
            agent=get_user_model().objects.get(username="anna.k"),
            text="Hi, Anna here. <b>How</b> can I help?",
        )
        events.send_turn_on_commit(turn)

    on_the_server(agent_writes)
    agent_message = page.get_by_role("log").locator('[data-author="agent"]')
    agent_message.wait_for()
    assert agent_message.locator(".message__author").inner_text() == "Anna"
    assert agent_message.locator(".text").inner_text() == "Hi, Anna here. <b>How</b> can I help?"
    page.locator(".typing-indicator").wait_for(state="hidden")

    def agent_resolves() -> None:
        Conversation.objects.filter(pk=conversation.pk).update(status="resolved")
        conversation_changed(conversation.pk)

    on_the_server(agent_resolves)
    page.get_by_role("radio", name="4 stars — Good").check()
    page.get_by_role("textbox", name="Comment (optional)").fill("Anna was great")
    page.get_by_role("button", name="Submit rating").click()
    page.get_by_text("Thank you for your feedback!").wait_for()
    assert page.locator(".rating-form").is_hidden()
    assert status_line.inner_text() == "This conversation is resolved"
    rated = Conversation.objects.get()
    assert (rated.rating, rated.rating_comment) == (4, "Anna was great")

    page.get_by_role("button", name="New conversation").click()
    page.wait_for_url(lambda url: "conversation=" in url and str(conversation.pk) not in url)
    page.wait_for_selector(".connection-status[data-state=connected]")
    assert page.get_by_role("log").locator("[data-author]").count() == 0
    page.get_by_role("button", name="Your conversations").click()
    earlier = page.get_by_role("region", name="Your conversations").get_by_role("link")
    earlier.first.wait_for()
    assert earlier.count() == 1
    assert "Resolved" in earlier.inner_text() and "Anna here" in earlier.inner_text()
    earlier.click()
    page.wait_for_url(f"**/chat/?conversation={conversation.pk}")
    page.get_by_role("log").locator('[data-author="agent"]').wait_for()
    context.close()
