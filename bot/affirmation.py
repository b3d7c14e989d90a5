"""A customer's short "yes" to something the bot offered ("yes please", "ja gerne", "oui
merci", "sí, por favor", "sì certo", "ja graag"): `affirmative(message)`.

conversations/ asks it about a customer's message when the bot's latest turn offered a
person (every abstention does: bot/wording.py), and hands the conversation over when it says
yes. Only a message that is nothing but a yes counts: "yes but where is my order?" asks
something new, and "no thanks" or "non merci" is not a yes.

A message is a yes when its words, in order, are all phrases of AFFIRMATIVES or COURTESIES
(thanks, "a person"), at least one of them affirmative, in at most MAX_WORDS words. Words are
compared without case, accents, apostrophes and punctuation; a thumbs-up emoji says yes;
letters typed twice or more count once ("yesss", "pleeease"); a word of five letters or more
may have one typo but its first letter ("pleas", "gerene"), a shorter one two letters swapped
("yse", "yaeh"), so that "food", "sale" or "lease" is not taken for "good", "vale" or "please".

The languages are those of the bot's words (bot/wording.py) and of the default handoff
phrases (conversations' migration 0003): English, German, French, Spanish, Italian and Dutch.
To add one, add its phrases to both tables (tests/bot/test_affirmation.py lists examples per
language).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

MAX_WORDS = 10
MAX_CHARS = 100

AFFIRMATIVES: dict[str, tuple[str, ...]] = {
    "en": (
        "yes", "yes please", "yeah", "yea", "yep", "yup", "ya", "yah", "ye", "sure",
        "sure thing", "ok", "okay", "okey", "okie", "shure", "alright", "all right", "please",
        "please do", "pls", "plz", "go ahead", "go for it", "do it", "do that", "do so",
        "of course", "certainly", "definitely", "absolutely", "yes i would", "yes i do", "i would",
        "i would like that", "id like that", "i would love that", "id love that",
        "that would be great", "that would be good", "that would be nice",
        "that would help", "that would be helpful", "thatd be great", "that'd be great",
        "would be great", "would be nice", "sounds good", "sounds great", "great", "perfect",
        "fine", "good", "why not", "lets do it", "lets do that", "connect me",
        "please connect me", "put me through", "transfer me", "indeed", "affirmative",
        "yes connect me", "yes you can",
    ),
    "de": (
        "ja", "ja bitte", "jawohl", "jap", "jo", "jup", "gerne", "gern", "sehr gerne",
        "bitte", "bitte ja", "klar", "na klar", "sicher", "sicher doch", "naturlich",
        "selbstverstandlich", "auf jeden fall", "unbedingt", "gut", "sehr gut", "super",
        "prima", "passt", "einverstanden", "genau", "das ware gut", "das ware super",
        "das ware toll", "das ware nett", "das ware schon", "machen sie das", "bitte verbinden",
        "verbinden sie mich", "bitte verbinden sie mich", "ja verbinden sie mich", "okay",
        "ok",
    ),
    "fr": (
        "oui", "ouais", "oui svp", "svp", "stp", "sil vous plait", "sil te plait", "volontiers",
        "daccord", "dacc", "dac", "bien sur", "avec plaisir", "certainement", "absolument",
        "parfait", "super", "tres bien", "entendu", "carrement", "allez y", "je veux bien",
        "ca marche", "cest daccord", "pourquoi pas", "oui je veux bien", "ok",
    ),
    "es": (
        "si", "si por favor", "por favor", "claro", "claro que si", "vale", "de acuerdo",
        "perfecto", "por supuesto", "desde luego", "bueno", "genial", "dale", "adelante",
        "me gustaria", "si me gustaria", "estaria bien", "esta bien", "venga", "ok",
    ),
    "it": (
        "si", "certo", "certamente", "per favore", "per piacere", "va bene", "volentieri",
        "daccordo", "perfetto", "ottimo", "sicuro", "assolutamente", "certo che si", "magari",
        "con piacere", "mi farebbe piacere", "si per favore", "benissimo", "procedi", "ok",
    ),
    "nl": (
        "ja", "ja graag", "graag", "ja hoor", "jazeker", "zeker", "prima", "goed", "oke",
        "is goed", "doe maar", "ja alsjeblieft", "alsjeblieft", "alstublieft", "natuurlijk",
        "akkoord", "ok",
    ),
}  # fmt: skip

# Words that may come with a yes, never one by themselves: "merci" alone after an offer is
# as likely "no thanks" as a yes.
COURTESIES: tuple[str, ...] = (
    "thanks", "thank you", "thx", "ty", "cheers", "many thanks", "thank you very much",
    "thanks a lot", "thank you so much", "danke", "danke schon", "danke sehr", "vielen dank",
    "merci", "merci beaucoup", "gracias", "muchas gracias", "grazie", "grazie mille",
    "bedankt", "dank je", "dank u", "dank je wel",
    "a person", "person", "a human", "human", "an agent", "agent", "someone", "somebody",
    "a real person", "the team", "your team", "that", "that please",
)  # fmt: skip

# Emoji that say yes by themselves (any skin tone), and those that only go with one.
_YES_EMOJI = re.compile("[\U0001f44d\U0001f44c\u2705\u2714\u2611]")


@dataclass(frozen=True)
class Affirmative:
    """A message that says yes; `language`: the one language its words are in (ISO 639-1),
    None when they are shared ("ok", "si") or only an emoji."""

    language: str | None


def _words(text: str) -> list[str]:
    text = _YES_EMOJI.sub(" ok ", text)  # "ok": a yes in no language in particular
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = plain.replace("'", "").replace("ß", "ss")
    return re.findall(r"[^\W_]+", plain)


def _squeezed(word: str) -> str:
    """Letters typed twice or more in a row count once: "yesss", "pleeease", "okk"."""
    return re.sub(r"(.)\1+", r"\1", word)


def _one_typo_apart(typed: str, word: str) -> bool:
    """One letter wrong, missing, extra, or two neighbours swapped (Damerau, distance 1)."""
    if abs(len(typed) - len(word)) > 1 or typed == word:
        return typed == word
    if len(typed) == len(word):
        diff = [i for i, (a, b) in enumerate(zip(typed, word, strict=True)) if a != b]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and typed[diff[0]] == word[diff[1]]
            and typed[diff[1]] == word[diff[0]]
        )
    short, long_ = (typed, word) if len(typed) < len(word) else (word, typed)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _typo_of(typed: str, word: str) -> bool:
    if typed[0] != word[0]:  # typos seldom hit the first letter: "lease" is not "please"
        return False
    if min(len(typed), len(word)) >= 5:
        return _one_typo_apart(typed, word)
    if len(typed) == len(word) >= 3:  # short words: only two letters swapped ("yse", "yaeh")
        return sorted(typed) == sorted(word) and _one_typo_apart(typed, word)
    return False


@lru_cache(maxsize=1)
def _phrases() -> tuple[tuple[tuple[str, ...], frozenset[str]], ...]:
    """Every phrase as its words, with the languages it says yes in (empty: a courtesy)."""
    languages: dict[tuple[str, ...], set[str]] = {}
    for language, phrases in AFFIRMATIVES.items():
        for phrase in phrases:
            languages.setdefault(tuple(_words(phrase)), set()).add(language)
    for phrase in COURTESIES:
        languages.setdefault(tuple(_words(phrase)), set())
    return tuple(
        (words, frozenset(found))
        for words, found in sorted(languages.items(), key=lambda item: -len(item[0]))
    )


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[tuple[str, str], ...]:
    """Every word of every phrase, with its letters typed twice counted once."""
    words = {word for phrase, _languages in _phrases() for word in phrase}
    return tuple((word, _squeezed(word)) for word in sorted(words))


@lru_cache(maxsize=4096)
def _meanings(typed: str) -> frozenset[str]:
    """The phrases' words a typed word stands for: itself, itself with letters typed twice
    ("yesss"), or with one typo. Worked out once a word, not once a phrase it is tried in:
    every customer message is asked whether it says yes."""
    squeezed = _squeezed(typed)
    return frozenset(
        word
        for word, word_squeezed in _vocabulary()
        if typed == word or squeezed == word_squeezed or _typo_of(typed, word)
    )


def affirmative(message: str) -> Affirmative | None:
    """Whether the message says yes and nothing else (see the module doc), and in which
    language; None when it doesn't."""
    if len(message) > MAX_CHARS:
        return None
    words = _words(message)
    if not words or len(words) > MAX_WORDS:
        return None
    meanings = [_meanings(word) for word in words]
    if not all(meanings):  # a word no phrase has: most messages end here
        return None
    # The phrases that cover words[:i], for each i reachable: (said yes, languages).
    reached: dict[int, tuple[bool, frozenset[str] | None]] = {0: (False, None)}
    for start in range(len(words)):
        if start not in reached:
            continue
        said_yes, languages = reached[start]
        for phrase, phrase_languages in _phrases():
            end = start + len(phrase)
            if end > len(words) or end in reached and reached[end][0]:
                continue
            if not all(w in m for m, w in zip(meanings[start:end], phrase, strict=True)):
                continue
            if phrase_languages:
                common = phrase_languages if languages is None else languages & phrase_languages
                reached[end] = (True, common or phrase_languages)
            elif end not in reached or said_yes:
                reached[end] = (said_yes, languages)
    said_yes, languages = reached.get(len(words), (False, None))
    if not said_yes:
        return None
    return Affirmative(next(iter(languages)) if languages and len(languages) == 1 else None)
