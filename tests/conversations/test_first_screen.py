"""The chat's first screen (issue 16.3): a greeting and suggested questions operators edit, in
the visitor's language, and whether the team answers now, from real agent presence (an inbox
socket's membership in Redis), business hours and the measured time to a first agent reply.
Viewing it stores nothing."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client
from django.utils import timezone

from bot.wording import ENGLISH, GERMAN
from conversations import availability, presence
from conversations.business_hours import support_zone
from conversations.escalation import escalate
from conversations.first_screen import (
    first_screen,
    greeting,
    suggested_questions,
    visitor_language,
)
from conversations.models import (
    BusinessHours,
    Conversation,
    Customer,
    Greeting,
    SuggestedQuestion,
    Turn,
)
from conversations.state import state_frame
from tests import personas

alice_agent = personas.alice_agent
olivia_operator = personas.olivia_operator

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def measured_afresh():
    availability.forget_cached_reply_time()
    presence.forget_cached_presence()
    yield
    availability.forget_cached_reply_time()
    presence.forget_cached_presence()


@pytest.fixture
def agent_at_inbox(alice_agent):
    """Alice's agent has the inbox open: the membership her inbox socket keeps in Redis."""
    async_to_sync(presence.arrive)(alice_agent.pk, "inbox-test-channel")
    yield alice_agent
    async_to_sync(presence.leave)(alice_agent.pk, "inbox-test-channel")


@pytest.fixture
def after_hours():
    """Business hours only on the day after tomorrow: closed now, back then at 09:00."""
    day = (timezone.now().astimezone(support_zone()) + timedelta(days=2)).weekday()
    BusinessHours.objects.create(weekday=day, opens=time(9), closes=time(17))
    return ENGLISH.weekdays[day]


@pytest.fixture
def within_hours():
    today = timezone.now().astimezone(support_zone()).weekday()
    BusinessHours.objects.create(weekday=today, opens=time(0), closes=time(23, 59, 59, 999999))


def company(text: str) -> str:
    return text.format(company=settings.COMPANY_NAME)


# --- Greeting and suggestions ------------------------------------------------------------------


def test_it_takes_the_visitors_first_browser_language_it_has_words_in():
    assert visitor_language("de-CH,de;q=0.9,en;q=0.8") == "de"
    assert visitor_language("ja,fr;q=0.7,en;q=0.5") == "fr"
    assert visitor_language("ja") == "en"
    assert visitor_language("") == "en"
    assert visitor_language("*;q=0.5, ;;garbage") == "en"


def test_it_greets_with_the_bots_own_words_in_the_visitors_language_by_default():
    assert greeting("en") == company(ENGLISH.greeting)
    assert greeting("de") == company(GERMAN.greeting)
    assert greeting("ja") == company(ENGLISH.greeting)


def test_an_operators_greeting_replaces_the_default_in_its_language_only():
    Greeting.objects.create(language="", text="Welcome to Brightwave! Ask us anything.")
    Greeting.objects.create(language="nl", text="Welkom! Waarmee kunnen we helpen?")

    assert greeting("en") == "Welcome to Brightwave! Ask us anything."
    assert greeting("nl") == "Welkom! Waarmee kunnen we helpen?"
    assert visitor_language("nl-BE,nl;q=0.9") == "nl"  # an operator's language counts
    # A language the bot speaks keeps the bot's words rather than the English ones.
    assert greeting("de") == company(GERMAN.greeting)


def test_it_suggests_the_enabled_questions_of_the_visitors_language_in_order_at_most_four():
    for position, text in enumerate(["Refunds?", "Shipping?", "Warranty?", "Wi-Fi?", "Fifth?"]):
        SuggestedQuestion.objects.create(text=text, position=10 - position)
    SuggestedQuestion.objects.create(text="Disabled?", position=0, enabled=False)
    SuggestedQuestion.objects.create(text="Wo ist meine Bestellung?", language="de", position=2)
    SuggestedQuestion.objects.create(text="Rücksendung?", language="de", position=1)

    assert suggested_questions("en") == ["Fifth?", "Wi-Fi?", "Warranty?", "Shipping?"]
    assert suggested_questions("de") == ["Rücksendung?", "Wo ist meine Bestellung?"]
    assert suggested_questions("fr") == suggested_questions("en")  # any language's


def test_the_admin_keeps_languages_as_primary_codes():
    question = SuggestedQuestion(text="  Where is my order? ", language=" DE-ch ")
    question.full_clean()
    assert (question.language, question.text) == ("de", "Where is my order?")
    with pytest.raises(Exception, match="language code"):
        SuggestedQuestion(text="Hi", language="german!").full_clean()


def test_operators_edit_the_greeting_and_suggestions_in_the_admin(olivia_operator):
    client = Client()
    client.force_login(olivia_operator)
    response = client.post(
        "/admin/conversations/suggestedquestion/add/",
        {"text": "Where is my order?", "language": "", "position": "1", "enabled": "on"},
    )
    assert response.status_code == 302
    response = client.post(
        "/admin/conversations/greeting/add/", {"language": "EN", "text": "Hello there!"}
    )
    assert response.status_code == 302
    assert first_screen("en")["greeting"] == "Hello there!"
    assert first_screen("en")["suggestions"] == ["Where is my order?"]
    assert client.get("/admin/conversations/suggestedquestion/").status_code == 200


def test_the_demo_seeds_suggestions_once_and_keeps_operators_edits(settings, tmp_path):
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    call_command("setup_demo", verbosity=0)
    assert len(suggested_questions("en")) == 4 and len(suggested_questions("de")) == 4
    SuggestedQuestion.objects.filter(language="").update(enabled=False)
    call_command("setup_demo", verbosity=0)
    assert suggested_questions("en") == []  # not re-seeded over the operator's choice
    assert SuggestedQuestion.objects.count() == 8


def test_viewing_the_chat_page_shows_the_first_screen_and_stores_nothing():
    SuggestedQuestion.objects.create(text="Wo ist meine Bestellung?", language="de")
    response = Client().get("/chat/", HTTP_ACCEPT_LANGUAGE="de-DE,de;q=0.9")

    assert response.status_code == 200
    page = response.content.decode()
    assert company(GERMAN.greeting) in page
    assert "Wo ist meine Bestellung?" in page
    assert "Unser Team antwortet meist in 5 Minuten" in page  # always open, nobody online
    assert "/chat/availability/?lang=de" in page
    assert not Customer.objects.exists() and not Conversation.objects.exists()


def test_the_first_screen_is_text_never_markup():
    Greeting.objects.create(language="", text="<img src=x onerror=alert(1)>Hi")
    SuggestedQuestion.objects.create(text="<script>alert(1)</script>")
    page = Client().get("/chat/").content.decode()
    assert "<img src=x" not in page and "<script>alert(1)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;Hi" in page


# --- Availability --------------------------------------------------------------------------------


def test_the_team_is_online_while_an_agent_has_the_inbox_open_even_after_hours(
    agent_at_inbox, after_hours
):
    shown = availability.customer_availability()
    assert shown == {
        "online": True,
        "away": False,
        "reply_minutes": availability.DEFAULT_REPLY_MINUTES,
        "text": "Our team is online · typically replies in 5 minutes",
    }


def test_the_team_is_away_only_after_hours_with_nobody_at_the_inbox(after_hours):
    shown = availability.customer_availability()
    zone = settings.SUPPORT_TIME_ZONE
    assert shown["online"] is False and shown["away"] is True
    assert shown["text"] == f"Our team is away · back on {after_hours} at 09:00 ({zone} time)"
    assert availability.customer_availability(GERMAN)["text"].startswith(
        "Unser Team ist gerade nicht da · zurück am "
    )


def test_within_hours_with_nobody_at_the_inbox_it_gives_the_reply_time_but_not_online(
    within_hours,
):
    shown = availability.customer_availability()
    assert (shown["online"], shown["away"]) == (False, False)
    assert shown["text"] == "Our team typically replies in 5 minutes"


def test_an_agent_leaving_the_inbox_is_seen_at_once(alice_agent, after_hours):
    async_to_sync(presence.arrive)(alice_agent.pk, "tab-1")
    assert availability.customer_availability()["online"] is True
    async_to_sync(presence.leave)(alice_agent.pk, "tab-1")
    assert availability.customer_availability()["away"] is True


def handed_over(
    ago: timedelta,
    replied_after: timedelta | None,
    customer: Customer,
    reason: str = Conversation.Escalation.CUSTOMER_REQUEST,
):
    now = timezone.now()
    conversation = Conversation.objects.create(
        customer=customer,
        status=Conversation.Status.PENDING,
        escalated_at=now - ago,
        escalation_reason=reason,
    )
    if replied_after is not None:
        for after in (replied_after, replied_after + timedelta(minutes=30)):
            turn = Turn.objects.create(
                conversation=conversation, author=Turn.Author.AGENT, text="Hi, Anna here."
            )
            Turn.objects.filter(pk=turn.pk).update(created_at=now - ago + after)
    return conversation


def test_the_typical_reply_time_is_the_median_from_handover_to_first_agent_reply(alice):
    for minutes in (2, 4, 10):
        handed_over(timedelta(days=1), timedelta(minutes=minutes, seconds=20), alice)
    handed_over(timedelta(hours=2), None, alice)  # not answered yet: not measured
    handed_over(timedelta(days=8), timedelta(hours=5), alice)  # older than the week
    # An agent who took over from the bot and wrote at once kept nobody waiting.
    for _ in range(3):
        handed_over(timedelta(hours=1), timedelta(seconds=5), alice, Conversation.Escalation.AGENT)
    # An agent's message before the handover is no reply to it.
    early = handed_over(timedelta(hours=3), timedelta(minutes=1), alice)
    Turn.objects.filter(conversation=early).update(created_at=timezone.now() - timedelta(days=2))

    assert availability.typical_reply_minutes() == 5  # 4 min 20 s, rounded up
    assert availability.customer_availability()["text"] == (
        "Our team typically replies in 5 minutes"
    )


def test_fast_replies_say_one_minute(alice):
    for seconds in (15, 30, 40):
        handed_over(timedelta(hours=1), timedelta(seconds=seconds), alice)
    assert availability.typical_reply_minutes() == 1
    assert availability.customer_availability()["text"] == "Our team typically replies in 1 minute"


def test_without_enough_measured_replies_it_says_the_default(alice):
    assert availability.typical_reply_minutes() == availability.DEFAULT_REPLY_MINUTES
    handed_over(timedelta(hours=1), timedelta(minutes=40), alice)
    handed_over(timedelta(hours=1), timedelta(minutes=50), alice)
    assert availability.typical_reply_minutes() == availability.DEFAULT_REPLY_MINUTES
    handed_over(timedelta(hours=1), timedelta(minutes=45), alice)
    assert availability.typical_reply_minutes() == 45


def test_the_availability_endpoint_answers_in_the_asked_language_and_stores_nothing(
    agent_at_inbox,
):
    response = Client().get("/chat/availability/?lang=de")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert response.json()["text"] == "Unser Team ist online · antwortet meist in 5 Minuten"
    assert Client().get("/chat/availability/?lang=<b>").json()["text"].startswith("Our team")
    assert Client().post("/chat/availability/").status_code == 405
    assert not Customer.objects.exists()


# --- The handover notice (the reported bug) ----------------------------------------------------


def system_texts(conversation: Conversation) -> list[str]:
    return list(
        Turn.objects.filter(conversation=conversation, author=Turn.Author.SYSTEM).values_list(
            "text", flat=True
        )
    )


def test_a_handover_after_hours_says_a_person_will_join_while_an_agent_is_at_the_inbox(
    alice_conversation, agent_at_inbox, after_hours
):
    escalate(alice_conversation, Conversation.Escalation.CUSTOMER_REQUEST)

    assert system_texts(alice_conversation) == [ENGLISH.person_will_join]
    assert state_frame(alice_conversation.pk)["needs_email"] is False


def test_a_handover_after_hours_with_nobody_at_the_inbox_says_away_and_asks_for_email(
    alice_conversation, after_hours
):
    escalate(alice_conversation, Conversation.Escalation.CUSTOMER_REQUEST)

    (notice,) = system_texts(alice_conversation)
    assert notice.startswith("Our team is away right now and back on ")
    assert state_frame(alice_conversation.pk)["needs_email"] is True
