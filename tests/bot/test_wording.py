"""The bot's own words in every language it speaks: each says everything English says, with the
same placeholders, quotes article titles as its language does, and is chosen by language code
(regional variants included; English for any other)."""

from __future__ import annotations

import re
import string
from dataclasses import fields

import pytest

from bot.wording import ENGLISH, FRENCH, GERMAN, ITALIAN, SPANISH, WORDINGS, wording_for


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def texts(wording) -> dict[str, str]:
    """Every text of a Wording by field name (tuple members as name[i])."""
    result: dict[str, str] = {}
    for f in fields(wording):
        value = getattr(wording, f.name)
        if isinstance(value, tuple):
            result.update({f"{f.name}[{i}]": item for i, item in enumerate(value)})
        elif f.name != "language":
            result[f.name] = value
    return result


def test_the_bot_speaks_english_german_french_spanish_and_italian():
    assert sorted(WORDINGS) == ["de", "en", "es", "fr", "it"]


@pytest.mark.parametrize("language", ["de", "fr", "es", "it"])
def test_every_language_says_everything_with_the_same_placeholders_as_english(language):
    english, translated = texts(ENGLISH), texts(WORDINGS[language])
    assert translated.keys() == english.keys()
    for name, text in translated.items():
        assert text.strip(), name
        assert placeholders(text) == placeholders(english[name]), name
        if name != "clock" and not name.startswith("weekdays"):
            assert text != english[name], f"{name} is not translated"


def test_titles_are_quoted_as_each_language_quotes_them():
    quoted = {w.language: w.pointer.format(title="Returns") for w in WORDINGS.values()}
    assert "“Returns”" in quoted["en"]
    assert "„Returns“" in quoted["de"]
    assert "«\u00a0Returns\u00a0»" in quoted["fr"]
    assert "«Returns»" in quoted["es"] and "«Returns»" in quoted["it"]


def test_french_keeps_its_punctuation_on_the_line_it_ends():
    for name, text in texts(FRENCH).items():
        assert not re.search(r" [?!:;»]|« ", text), name
    assert FRENCH.abstain.endswith("équipe\u00a0?")


def test_a_regional_variant_gets_its_languages_words_and_any_other_language_english():
    assert wording_for("de-CH") is GERMAN and wording_for("fr_BE") is FRENCH
    assert wording_for("ES") is SPANISH and wording_for("it") is ITALIAN
    assert wording_for("pt") is ENGLISH and wording_for(None) is ENGLISH
    assert wording_for("") is ENGLISH


@pytest.mark.parametrize(
    ("wording", "expected"),
    [
        (ENGLISH, ["today at 09:00", "tomorrow at 09:00", "on Friday at 09:00", "next Monday"]),
        (GERMAN, ["heute um 09:00 Uhr", "morgen um 09:00 Uhr", "am Freitag um", "nächsten Montag"]),
        (FRENCH, ["aujourd'hui à 9 h 00", "demain à 9 h 00", "vendredi à 9 h", "lundi prochain"]),
        (SPANISH, ["hoy a las 09:00", "mañana a las 09:00", "el viernes a", "el próximo lunes"]),
        (ITALIAN, ["oggi alle 09:00", "domani alle 09:00", "venerdì alle", "della prossima"]),
    ],
)
def test_it_names_when_the_team_is_back_in_each_language(wording, expected):
    said = [
        wording.opening(days=days, weekday=weekday, hour=9, minute=0, zone="Europe/Rome")
        for days, weekday in ((0, 0), (1, 1), (4, 4), (7, 0))
    ]
    assert [e in s for e, s in zip(expected, said, strict=True)] == [True] * 4
    assert all("Europe/Rome" in s for s in said)
