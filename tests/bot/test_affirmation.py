"""A customer's short yes to the bot's offer of a person, in every language of the bot's words
and of the default handoff phrases; and what is not a yes."""

from __future__ import annotations

import pytest

from bot.affirmation import AFFIRMATIVES, affirmative
from bot.small_talk import small_talk_kinds, small_talk_language, small_talk_reply
from bot.wording import WORDINGS, wording_for

YES_BY_LANGUAGE = {
    "en": ["yes", "Yes please!", "yeah", "yep", "sure", "Sure thing.", "ok", "OK!", "okay",
           "please do", "Yes, please connect me", "that would be great, thanks", "go ahead",
           "yes thank you 🙂", "Yes, a person please"],
    "de": ["ja", "Ja bitte", "Ja, bitte!", "gerne", "Gern.", "ja gerne", "klar", "Na klar!",
           "bitte", "ja danke", "sehr gerne, danke schön"],
    "fr": ["oui", "Oui merci", "Oui, merci !", "d'accord", "D’accord", "volontiers",
           "oui s'il vous plaît", "bien sûr", "Avec plaisir", "ouais"],
    "es": ["sí", "si", "Sí, por favor.", "si por favor", "claro", "¡Claro que sí!", "vale",
           "de acuerdo", "por favor", "sí, gracias"],
    "it": ["sì", "si", "Sì, grazie", "certo", "Certo!", "va bene", "volentieri", "sì per favore",
           "d'accordo", "perfetto"],
    "nl": ["ja", "Ja graag", "graag", "ja hoor", "prima", "is goed", "ja alsjeblieft"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("language", "text"),
    [(language, text) for language, texts in YES_BY_LANGUAGE.items() for text in texts],
)
def test_a_short_yes_in_each_language_is_affirmative(language, text):
    assert affirmative(text) is not None, text


def test_it_covers_the_bots_languages_and_those_of_the_handoff_phrases():
    assert set(AFFIRMATIVES) >= set(WORDINGS) | {"nl"}


@pytest.mark.parametrize(
    "text",
    ["YES", "yes.", "Yes!!!", "yesss", "yes 👍", "👍", "👍🏽", "👌", "✅ yes", "yse", "pleas",
     "yes plese", "okey", "yaeh", "gerene", "claroo", "  ja   bitte  ", "Oui merci :)"],
)  # fmt: skip
def test_casing_punctuation_emoji_repeated_letters_and_a_typo_are_forgiven(text):
    assert affirmative(text) is not None, text


@pytest.mark.parametrize(
    "text",
    [
        "no", "No thanks", "no, thank you", "nope", "not now", "nein", "nein danke", "non",
        "non merci", "no gracias", "no grazie", "nee", "nee dank je",
        # a yes with a new question or more to say
        "yes but where is my order?", "yes, where is my order", "ok so how do I return it?",
        "Yes I have a question about my invoice", "sure, how long does shipping take",
        "ja, aber wo ist meine Bestellung?", "oui mais où est ma commande ?",
        # courtesies alone may mean no
        "thanks", "merci", "danke", "gracias", "🙏", "🙂",
        # neither
        "", "   ", "?", "maybe", "I don't know", "not sure", "stop", "yes " * 12,
        # a word one letter away from a short yes is another word
        "food", "sale", "fire", "yet", "eyes", "goods", "lease",
    ],
)  # fmt: skip
def test_a_no_a_new_question_or_anything_else_is_not_affirmative(text):
    assert affirmative(text) is None, text


@pytest.mark.parametrize(
    ("text", "language"),
    [("ja bitte", "de"), ("gerne", "de"), ("oui merci", "fr"), ("si por favor", "es"),
     ("certo", "it"), ("ja graag", "nl"), ("yes please", "en"),
     ("ok", None), ("sí", None), ("ja", None), ("👍", None)],
)  # fmt: skip
def test_it_names_the_language_of_a_yes_when_its_words_tell(text, language):
    yes = affirmative(text)
    assert yes is not None and yes.language == language


@pytest.mark.parametrize(
    ("text", "language"),
    [("no thanks", "en"), ("No", "en"), ("nope", "en"), ("nein danke", "de"),
     ("non merci", "fr"), ("no gracias", "es"), ("no grazie", "it")],
)  # fmt: skip
def test_a_no_gets_a_short_acknowledgement_in_the_customers_language(text, language):
    kinds = small_talk_kinds(text)
    assert kinds is not None and "decline" in kinds
    wording = wording_for(small_talk_language(text) or "en")
    assert wording.language == language
    assert small_talk_reply(kinds, wording) == wording.declined
    assert "?" not in wording.declined  # no question back: the customer said no


@pytest.mark.parametrize("text", ["no problem", "no, where is my order?", "not working"])
def test_a_no_with_more_to_say_is_not_small_talk(text):
    assert small_talk_kinds(text) is None
