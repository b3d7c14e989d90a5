"""The bot speaks the customer's language: its own words (lead-ins, pointers, the hedge, "I
couldn't find it" with the offer of a person, the request for detail, small talk) come in the
language of the customer's latest message (or of the newest earlier one when the latest is too
short to tell), English otherwise; what it quotes is the article's. The prompt names the same
language for a model, and a model's no-answer marker becomes the refusal in it too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.grounding import ground
from bot.guards import NO_ANSWER_MARKER, AbstainOnMarker, AbstainReply
from bot.prompt import UNKNOWN_LANGUAGE, guess_language
from bot.providers.base import Provider
from bot.providers.offline import HEDGE_MARGIN, OfflineProvider, answer, answer_from
from bot.types import (
    ChatMessage,
    Finished,
    Knowledge,
    ReplyRequest,
    StreamEvent,
    TextDelta,
)
from bot.wording import ENGLISH, FRENCH, GERMAN, ITALIAN, SPANISH, WORDINGS
from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from knowledge.search import Hit
from tests.fixtures_kb import indexed_article

GERMAN_TITLE = "Bestellung stornieren"
GERMAN_BODY = (
    "Sie können Ihre Bestellung stornieren, solange sie noch nicht versandt wurde. Öffnen Sie "
    "dazu in Ihrem Konto die Bestellübersicht und wählen Sie bei der Bestellung „Stornieren“."
)
GERMAN_QUESTION = "Wie kann ich meine Bestellung stornieren?"
FRENCH_QUESTION = "Est-ce que vous vendez aussi des billets de concert pour Paris ?"


def german_hit(confidence: float = 0.9) -> Hit:
    return Hit(
        article_id=3,
        title=GERMAN_TITLE,
        url="https://help.example.com/de/stornieren",
        text=GERMAN_BODY,
        score=3.0,
        confidence=confidence,
        language="de",
    )


def finds(*hits: Hit):
    """A search that finds these hits for any question."""
    return lambda query, k: list(hits)[:k]


def nothing(query: str, k: int) -> list[Hit]:
    return []


def conversation(*customer_messages: str) -> list[ChatMessage]:
    """The customer's messages with a bot reply between each two."""
    messages: list[ChatMessage] = []
    for text in customer_messages:
        if messages:
            messages.append(ChatMessage("assistant", "…"))
        messages.append(ChatMessage("user", text))
    return messages


# --- The offline answerer ------------------------------------------------------------------------


def test_a_german_question_gets_a_german_lead_in_and_a_german_pointer_to_its_source():
    reply = answer(GERMAN_QUESTION, search=finds(german_hit()))

    lines = reply.text.split("\n")
    assert lines[0] in (*GERMAN.lead_ins, *GERMAN.step_lead_ins)
    assert "solange sie noch nicht versandt wurde" in reply.text  # the article's own words
    assert lines[-1] == "Mehr dazu lesen Sie in „Bestellung stornieren“."
    assert reply.sources[0].title == GERMAN_TITLE and not reply.abstained


def test_a_german_question_retrieval_is_less_sure_of_gets_the_german_hedge():
    threshold = 0.5
    unsure = german_hit(confidence=threshold + HEDGE_MARGIN / 2)

    reply = answer_from(ground(conversation(GERMAN_QUESTION), finds(unsure), threshold=threshold))

    assert reply.text.startswith(GERMAN.hedged_lead_in + "\n")
    assert reply.text.endswith(
        GERMAN.pointer.format(title=GERMAN_TITLE) + " " + GERMAN.hedged_closing
    )


def test_a_french_question_without_an_answer_gets_the_french_refusal_and_the_offer_of_a_person():
    reply = answer(FRENCH_QUESTION, search=nothing)

    assert reply.abstained
    assert reply.text == FRENCH.abstain
    assert "je n'ai pas trouvé" in reply.text
    assert "Souhaitez-vous que je vous mette en relation avec un membre de notre équipe" in (
        reply.text
    )


@pytest.mark.parametrize(
    "question",
    [
        "Do you also sell concert tickets for Paris?",  # English
        "Stornierung?",  # one word: too short to tell
        "order 4411",
    ],
)
def test_an_english_or_too_short_message_gets_english_words(question):
    assert answer(question, search=nothing).text == ENGLISH.abstain
    reply = answer(question, search=finds(german_hit()))
    assert reply.text.split("\n")[0] in (*ENGLISH.lead_ins, *ENGLISH.step_lead_ins)


def test_a_short_follow_up_keeps_the_language_the_customer_writes_in():
    knowledge = ground(conversation(GERMAN_QUESTION, "Bestellnummer 4411"), nothing)

    assert knowledge.language == "de"
    assert answer_from(knowledge).text == GERMAN.abstain


def test_the_latest_message_decides_when_the_customer_changes_language():
    knowledge = ground(conversation(GERMAN_QUESTION, "Do you also sell gift cards?"), nothing)
    assert knowledge.language == "en"
    assert answer_from(knowledge).text == ENGLISH.abstain


@pytest.mark.parametrize("language", sorted(WORDINGS))
def test_every_reply_of_its_own_comes_in_the_customers_language(language):
    words = WORDINGS[language]
    assert answer_from(Knowledge(abstain=True, language=language)).text == words.abstain
    assert answer_from(Knowledge(language=language)).text == words.ask_for_detail
    assert answer_from(Knowledge(small_talk=frozenset({"thanks"}), language=language)).text == (
        words.welcome
    )


def test_small_talk_in_a_german_conversation_gets_a_german_reply():
    knowledge = ground(conversation(GERMAN_QUESTION, "thanks!"), nothing)
    assert knowledge.small_talk == {"thanks"}
    assert answer_from(knowledge).text == GERMAN.welcome


@pytest.mark.parametrize(
    ("message", "kinds", "expected"),
    [
        ("Danke!", {"thanks"}, GERMAN.welcome),
        ("Merci beaucoup", {"thanks"}, FRENCH.welcome),
        ("¡Muchas gracias!", {"thanks"}, SPANISH.welcome),
        ("Grazie mille", {"thanks"}, ITALIAN.welcome),
        ("Tschüss", {"bye"}, GERMAN.bye),
        ("Buenos días", {"greeting"}, SPANISH.greeting),
    ],
)
def test_small_talk_in_german_french_spanish_or_italian_is_answered_as_small_talk_in_it(
    message, kinds, expected, settings
):
    settings.COMPANY_NAME = "Brightwave"
    knowledge = ground(conversation(message), nothing)
    assert knowledge.small_talk == kinds and not knowledge.abstain
    assert answer_from(knowledge).text == expected.format(company="Brightwave")


def test_a_question_after_a_foreign_greeting_is_still_a_question():
    knowledge = ground(conversation("Hola, ¿dónde está mi pedido?"), nothing)
    assert not knowledge.small_talk and knowledge.abstain


def test_the_offline_provider_streams_the_customers_language():
    request = ReplyRequest(conversation(FRENCH_QUESTION))
    events = list(OfflineProvider(search=nothing).stream(request))
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == FRENCH.abstain
    assert isinstance(events[-1], Finished) and events[-1].abstained


# --- Whoever answers --------------------------------------------------------------------------


class MarkerModel(Provider):
    """A model that finds no answer in its passages."""

    name = "marker"

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        yield TextDelta(NO_ANSWER_MARKER)
        yield Finished(model="m", prompt_tokens=10, completion_tokens=1)


def test_a_models_no_answer_becomes_the_refusal_in_the_customers_language():
    request = ReplyRequest(
        [ChatMessage("user", "Posso pagare in contanti alla consegna?")],
        knowledge=Knowledge(passages=(), language="it"),
        paced=False,
    )
    events = list(AbstainOnMarker(MarkerModel()).stream(request))
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == ITALIAN.abstain
    assert isinstance(events[-1], Finished) and events[-1].abstained


def test_retrievals_abstention_says_it_in_the_customers_language():
    request = ReplyRequest(
        [ChatMessage("user", "¿Puedo pagar en efectivo?")],
        knowledge=Knowledge(abstain=True, language="es"),
        paced=False,
    )
    events = list(AbstainReply().stream(request))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == SPANISH.abstain


def test_the_prompt_names_the_language_of_a_message_or_says_it_is_unsure():
    assert guess_language(GERMAN_QUESTION) == "German"
    assert guess_language("¿Dónde está mi pedido?") == "Spanish"
    assert guess_language("Gdzie jest moje zamówienie?") == "Polish"
    assert guess_language("How do I reset my password?") == "English"
    for short in ("hi", "ok", "danke", "4411", ""):
        assert guess_language(short) == UNKNOWN_LANGUAGE


# --- A whole reply ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_german_customer_gets_the_offline_answer_in_german():
    indexed_article(slug="stornieren", title=GERMAN_TITLE, body=GERMAN_BODY, language="de")
    chat = Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(chat, "c-1", GERMAN_QUESTION)
    assert posted.reply is not None

    write_reply(posted.reply.pk)

    reply = Turn.objects.get(pk=posted.reply.pk)
    assert reply.status == "done" and not reply.abstained
    assert reply.text.split("\n")[0] in (*GERMAN.lead_ins, *GERMAN.step_lead_ins)
    assert reply.text.endswith("„Bestellung stornieren“.")
