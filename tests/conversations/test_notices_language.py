"""The notices the conversation sends in the bot's name come in the customer's language: a
person will join, the team is away until a time named in that language (and the email address
noted), and the apology for a reply that failed. English when the customer's messages don't
tell."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from bot import run
from bot.types import ProviderError
from bot.wording import ENGLISH, FRENCH, GERMAN, ITALIAN, SPANISH
from conversations import replies
from conversations.business_hours import describe_opening
from conversations.contact import save_contact_email
from conversations.escalation import escalate
from conversations.models import BusinessHours, Conversation, Turn
from conversations.replies import write_reply
from tests.conversations.test_handoff import (  # noqa: F401 (default_rules: a fixture)
    default_rules,
    local_now,
    post,
    refreshed,
    system_texts,
)

pytestmark = pytest.mark.django_db


def test_the_handoff_notice_comes_in_the_language_the_customer_writes_in(alice_conversation):
    posted = post(alice_conversation, "Kann ich bitte mit einem Menschen sprechen?")

    assert posted.reply is None
    assert refreshed(alice_conversation).status == "pending"
    assert system_texts(alice_conversation) == [GERMAN.person_will_join]


def test_outside_business_hours_a_french_customer_is_asked_for_an_email_in_french(
    alice_conversation,
):
    in_two_days = local_now() + timedelta(days=2)
    BusinessHours.objects.create(weekday=in_two_days.weekday(), opens=time(9), closes=time(17))
    post(alice_conversation, "Bonjour, ma commande n'est toujours pas arrivée.")
    escalate(alice_conversation, "customer_request")

    (notice,) = system_texts(alice_conversation)
    opening = in_two_days.replace(hour=9, minute=0, second=0, microsecond=0)
    when = describe_opening(opening, local_now(), FRENCH)
    assert notice == FRENCH.team_away.format(when=when)
    assert f"{FRENCH.weekdays[in_two_days.weekday()]} à 9 h 00" in notice
    assert "adresse e-mail" in notice

    save_contact_email(alice_conversation, "alice@example.com")
    assert system_texts(alice_conversation)[-1] == FRENCH.email_saved.format(
        email="alice@example.com"
    )


@pytest.mark.parametrize("message", [None, "hi", "4411"])
def test_a_customer_whose_messages_do_not_tell_gets_english_notices(alice_conversation, message):
    if message is not None:
        post(alice_conversation, message)
    escalate(alice_conversation, "customer_request")
    assert system_texts(alice_conversation) == [ENGLISH.person_will_join]


def ask(conversation: Conversation, text: str) -> Turn:
    posted = post(conversation, text)
    assert posted.reply is not None
    write_reply(posted.reply.pk)
    return Turn.objects.get(pk=posted.reply.pk)


def test_a_reply_that_fails_apologises_in_the_customers_language(alice_conversation, monkeypatch):
    def fails(*args: object, **kwargs: object) -> run.Answer:
        raise ProviderError("the model is down", permanent=True, code="provider_error")

    monkeypatch.setattr(run, "answer", fails)

    reply = ask(alice_conversation, "¿Dónde está mi pedido? Lo pedí hace una semana.")

    assert (reply.status, reply.text) == ("failed", SPANISH.apology)


def test_a_reply_that_fails_before_its_request_apologises_in_the_language_of_the_message(
    alice_conversation, monkeypatch
):
    def unreadable(*args: object, **kwargs: object) -> object:
        raise ProviderError("the knowledge base could not be read", permanent=True)

    monkeypatch.setattr(replies, "request_for_reply", unreadable)

    reply = ask(alice_conversation, "Dov'è il mio ordine? L'ho fatto una settimana fa.")

    assert (reply.status, reply.text) == ("failed", ITALIAN.apology)
