"""Handover on yes: the customer's yes to the bot's offer of a person hands the conversation
over exactly as "Talk to a person" does, and the offer carries a "Connect me" button.

Personas: alice is the customer."""

from __future__ import annotations

import pytest

from bot.wording import ENGLISH, FRENCH, GERMAN, ITALIAN, SPANISH
from conversations import services
from conversations.escalation import ask_for_person
from conversations.events import done_frame
from conversations.models import Conversation, Turn
from conversations.replies import write_reply
from tests.conftest import open_chat, receive_until
from tests.conversations.test_handoff import default_rules, on_the_server  # noqa: F401

Status = Conversation.Status


@pytest.fixture
def offline(settings):
    """The offline answerer with an empty knowledge base: every question is one it can't
    answer, so every reply offers a person."""
    settings.LLM_PROVIDER = "offline"
    settings.OFFLINE_WORD_DELAY_MS = 0


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    from conversations import tasks

    ids: list[int] = []
    monkeypatch.setattr(tasks.generate_reply, "delay", ids.append)
    return ids


def post(conversation: Conversation, text: str) -> services.PostedMessage:
    return services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)


def ask_and_answer(conversation: Conversation, text: str) -> Turn:
    posted = post(conversation, text)
    assert posted.reply is not None
    write_reply(posted.reply.pk)
    return Turn.objects.get(pk=posted.reply.pk)


def offer(conversation: Conversation, question: str = "What colour is the moon?") -> Turn:
    """The customer asks, the bot abstains and offers a person (stored as the worker would)."""
    asked = post(conversation, question)
    Turn.objects.filter(pk=asked.reply.pk).update(
        status="done", abstained=True, text=ENGLISH.abstain
    )
    return Turn.objects.get(pk=asked.reply.pk)


def refreshed(conversation: Conversation) -> Conversation:
    conversation.refresh_from_db()
    return conversation


def system_texts(conversation: Conversation) -> list[str]:
    return list(conversation.turns.filter(author="system").values_list("text", flat=True))


# --- The offer ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reply_the_bot_could_not_give_offers_a_person_in_its_turn_and_done_frame(
    alice_conversation, offline
):
    reply = ask_and_answer(alice_conversation, "What colour is the moon on Tuesdays?")
    assert reply.abstained and reply.text == ENGLISH.abstain
    assert reply.offers_person
    assert reply.as_event()["offers_handoff"] is True
    assert done_frame(reply)["offers_handoff"] is True


@pytest.mark.django_db
def test_an_answer_small_talk_a_failure_and_a_customer_message_offer_no_person(
    alice_conversation,
):
    customer = post(alice_conversation, "How do I return an item?").turn
    answer = Turn.objects.create(conversation=alice_conversation, author="bot", status="done")
    failed = Turn.objects.create(conversation=alice_conversation, author="bot", status="failed")
    streaming = Turn.objects.create(
        conversation=alice_conversation, author="bot", status="streaming", abstained=True
    )
    for turn in (customer, answer, failed, streaming):
        assert not turn.offers_person
        assert turn.as_event()["offers_handoff"] is False


# --- A yes to it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_yes_please_after_the_offer_hands_over_and_the_bot_does_not_answer_it(
    alice_conversation, offline, queued, django_capture_on_commit_callbacks
):
    reply = ask_and_answer(alice_conversation, "What colour is the moon on Tuesdays?")
    assert reply.offers_person and refreshed(alice_conversation).status == "open"
    queued.clear()

    with django_capture_on_commit_callbacks(execute=True):
        posted = post(alice_conversation, "yes please")

    assert posted.reply is None and posted.ack_frame()["reply_id"] is None
    assert queued == []
    conversation = refreshed(alice_conversation)
    assert (conversation.status, conversation.escalation_reason) == ("pending", "customer_request")
    assert [t.author for t in conversation.turns.all()] == ["customer", "bot", "customer", "system"]
    assert system_texts(conversation) == [ENGLISH.person_will_join]
    assert not Turn.objects.filter(author="bot", status="queued").exists()


@pytest.mark.django_db
def test_a_yes_hands_over_just_as_talk_to_a_person_does(alice, alice_conversation):
    offer(alice_conversation)
    post(alice_conversation, "Sure!")
    by_yes = refreshed(alice_conversation)

    other = Conversation.objects.create(customer=alice)
    offer(other)
    ask_for_person(other)
    by_button = refreshed(other)

    def outcome(conversation: Conversation) -> tuple:
        return (
            conversation.status,
            conversation.escalation_reason,
            conversation.assignee_id,
            system_texts(conversation),
        )

    assert (
        outcome(by_yes)
        == outcome(by_button)
        == (
            "pending",
            "customer_request",
            None,
            [ENGLISH.person_will_join],
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("question", "yes", "notice"),
    [
        ("What colour is the moon?", "yes", ENGLISH.person_will_join),
        ("What colour is the moon?", "OK 👍", ENGLISH.person_will_join),
        ("Welche Farbe hat der Mond am Dienstag?", "Ja, gerne!", GERMAN.person_will_join),
        ("Quelle est la couleur de la lune le mardi ?", "Oui merci", FRENCH.person_will_join),
        ("¿De qué color es la luna los martes?", "Sí, por favor", SPANISH.person_will_join),
        ("Di che colore è la luna il martedì?", "sì certo", ITALIAN.person_will_join),
        ("Welke kleur heeft de maan op dinsdag?", "ja graag", ENGLISH.person_will_join),
    ],
)
def test_a_yes_in_each_language_hands_over_with_the_notice_in_the_customers_language(
    alice_conversation, question, yes, notice
):
    offer(alice_conversation, question)
    assert post(alice_conversation, yes).reply is None
    conversation = refreshed(alice_conversation)
    assert (conversation.status, conversation.escalation_reason) == ("pending", "customer_request")
    assert system_texts(conversation) == [notice]


@pytest.mark.django_db
def test_a_yes_after_a_normal_answer_is_answered_and_hands_nothing_over(alice_conversation):
    asked = post(alice_conversation, "How do I return an item?")
    Turn.objects.filter(pk=asked.reply.pk).update(status="done", text="Here's how: …")
    posted = post(alice_conversation, "yes please")
    assert posted.reply is not None and posted.reply.status == "queued"
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_a_yes_as_the_first_message_is_answered(alice_conversation):
    assert post(alice_conversation, "yes").reply is not None
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text", ["yes but where is my order?", "no thanks", "non merci", "What about returns?"]
)
def test_a_yes_with_a_new_question_or_a_no_after_the_offer_is_answered(alice_conversation, text):
    offer(alice_conversation)
    posted = post(alice_conversation, text)
    assert posted.reply is not None and posted.reply.status == "queued"
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_a_yes_to_an_older_offer_is_answered_once_the_bot_said_something_else(
    alice_conversation,
):
    offer(alice_conversation)
    post(alice_conversation, "hmm")  # its reply is queued: the latest bot turn offers nothing
    assert post(alice_conversation, "yes").reply is not None
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_no_thanks_after_the_offer_gets_a_short_acknowledgement(alice_conversation, offline):
    ask_and_answer(alice_conversation, "What colour is the moon on Tuesdays?")
    reply = ask_and_answer(alice_conversation, "No thanks")
    assert reply.text == ENGLISH.declined and not reply.offers_person
    assert refreshed(alice_conversation).status == "open"


@pytest.mark.django_db
def test_nein_danke_is_acknowledged_in_german(alice_conversation, offline):
    ask_and_answer(alice_conversation, "Welche Farbe hat der Mond am Dienstag?")
    assert ask_and_answer(alice_conversation, "Nein danke").text == GERMAN.declined


# --- Over the socket ---------------------------------------------------------------------------


def is_state(frame: dict) -> bool:
    return frame["type"] == "conversation.state"


@pytest.mark.django_db(transaction=True)
async def test_a_yes_over_the_socket_is_acknowledged_without_a_reply_and_hands_over(
    alice_conversation,
):
    from channels.db import database_sync_to_async

    await database_sync_to_async(offer)(alice_conversation)
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    assert chat.snapshot["turns"][-1]["offers_handoff"] is True
    await chat.send_json_to({"type": "message", "client_id": "m-yes", "text": "yes please"})
    frames = await receive_until(chat, is_state)
    ack = next(f for f in frames if f["type"] == "ack")
    assert ack["reply_id"] is None and ack["turn_id"] > 0
    notices = [f["turn"] for f in frames if f["type"] == "turn" and f["turn"]["author"] == "system"]
    assert [t["text"] for t in notices] == [ENGLISH.person_will_join]
    assert frames[-1]["status"] == "pending"
    assert frames[-1]["escalation_reason"] == "customer_request"
    await chat.disconnect()


# --- In the page (Chromium) --------------------------------------------------------------------


@pytest.fixture
def stack(offline_app):
    """The whole app with the offline answerer and the demo help articles."""
    return offline_app


OFFLINE_APP = {"word_delay_ms": 0}


@pytest.fixture
def page(chromium, stack):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{stack}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    yield page
    context.close()


UNANSWERABLE = "Can I pay for my order with seashells?"


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def ask_what_the_help_articles_do_not_cover(page):
    send(page, UNANSWERABLE)
    offer = page.locator('[role=log] [data-author=bot][data-status="done"]').last
    offer.wait_for()
    assert offer.locator(".text").inner_text() in (
        ENGLISH.abstain,
        ENGLISH.out_of_domain.format(company="Brightwave"),
    )
    connect = offer.get_by_role("button", name="Connect me")
    connect.wait_for()
    return connect


def assert_handed_over(page) -> None:
    notice = page.get_by_role("log").locator('[data-author="system"]').last
    notice.wait_for()
    assert notice.inner_text() == ENGLISH.person_will_join
    page.get_by_role("status").filter(has_text="Waiting for a person…").wait_for()
    page.get_by_role("button", name="Connect me").wait_for(state="hidden")
    assert page.get_by_role("button", name="Talk to a person").is_hidden()
    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.escalation_reason) == ("pending", "customer_request")


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_the_page_typing_yes_please_to_the_bots_offer_brings_a_person(page):
    ask_what_the_help_articles_do_not_cover(page)
    send(page, "yes please")
    assert_handed_over(page)
    # The bot never answered the yes.
    assert page.locator("[role=log] [data-author=bot]:not([hidden])").count() == 1
    assert Turn.objects.filter(author="bot").count() == 1


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_the_page_the_connect_me_button_under_the_offer_brings_a_person(page):
    connect = ask_what_the_help_articles_do_not_cover(page)
    assert connect.get_attribute("aria-label") == "Connect me with a person from our team"
    connect.focus()  # reachable and pressed from the keyboard
    page.keyboard.press("Enter")
    assert_handed_over(page)
    assert list(Turn.objects.values_list("author", flat=True)) == ["customer", "bot", "system"]


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_the_page_a_new_question_after_the_offer_hides_connect_me_and_is_answered(page):
    ask_what_the_help_articles_do_not_cover(page)
    send(page, "yes but how do I return an item?")
    page.locator('[role=log] [data-author=bot][data-status="done"]').nth(1).wait_for()
    answer = page.locator('[role=log] [data-author=bot][data-status="done"]').nth(1)
    assert "return" in answer.locator(".text").inner_text().lower()
    offers = page.locator("[role=log] .offer-person")
    assert offers.count() == 1 and offers.is_hidden()  # under the old offer, no longer shown
    assert page.get_by_role("button", name="Connect me").count() == 0
    assert Conversation.objects.get().status == "open"


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_the_widget_on_a_phone_connect_me_under_the_offer_brings_a_person(chromium, stack):
    """The widget on a shop's page, 390 px wide: its iframe is the chat page, with the same
    button under the offer, inside the frame."""
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        shop = f"{stack}/shop/"
        snippet = f'<script src="{stack}/static/chat/widget.js" data-support-bot async></script>'
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
        connect = ask_what_the_help_articles_do_not_cover(frame)
        box, frame_box = connect.bounding_box(), page.locator("#support-bot-frame").bounding_box()
        assert (
            frame_box["x"] <= box["x"]
            and box["x"] + box["width"] <= frame_box["x"] + frame_box["width"]
        )
        connect.click()
        notice = frame.get_by_role("log").locator('[data-author="system"]').last
        notice.wait_for()
        assert notice.inner_text() == ENGLISH.person_will_join
        frame.get_by_role("button", name="Connect me").wait_for(state="hidden")
        assert Conversation.objects.get().escalation_reason == "customer_request"
    finally:
        context.close()
