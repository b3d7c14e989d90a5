"""Telling a question in English from one in another language, from its function words.

Retrieval's lexical side analyses English. When a question's words are unknown to the
knowledge base, that means one of two things: the question is in another language (so only the
multilingual embedding can judge it), or it is in English and asks about something the articles
never mention (so the unknown words are evidence *against* every passage). Function words tell
the two apart well enough for that: "are you hiring? how do I apply for a job" is full of
English ones, "Kann ich meine Bestellung noch stornieren?" of German ones. Keyword questions
with no function words count as English, the knowledge base's language.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Frequent function words of the languages customers most often write in besides English.
# Words that are also English words ("die", "no", "in", "is", "a") are left out of both lists.
_FOREIGN_TEXT = """
    der das und ist ich nicht ein eine einen mein meine meinen meiner kann wie was wo wann
    warum mit für auf noch schon habe haben sie wir ihr es zu von bei ob oder aber dass mir
    mich dich sich wird werden bitte
    le la les un une des et est je ne pas mon ma mes comment pourquoi quand où avec pour sur
    dans vous nous il elle puis peux mais ou du au aux ce cette qui que quoi
    el los las y yo mi mis cómo qué dónde cuándo por para con se puedo tengo pero mí
    muy su sus del al está están hay
    het een ik niet mijn hoe wat waar wanneer waarom met voor op heb jullie ook maar
    lo gli è io non mio mia come perché quando dove posso ho della delle sono
    não meu minha como quando onde porque com para uma um
"""
FOREIGN_FUNCTION_WORDS = frozenset(_FOREIGN_TEXT.split())

_ENGLISH_TEXT = """
    the an and is are was were i you my me we our your it its to of for in on at with how
    what when where why which who can could do does did have has had be been not this that
    there if or from will would should about into than then them they their he she his her
"""
ENGLISH_FUNCTION_WORDS = frozenset(_ENGLISH_TEXT.split())

_WORD = re.compile(r"[^\W\d_]+")
# English words almost never carry accents; the other languages' often do (envío, löschen).
_ACCENTED = re.compile(r"[à-öø-ÿœß]")


def function_word_counts(text: str) -> tuple[int, int]:
    """(English function words, other languages' function words and accented words)."""
    text = unicodedata.normalize("NFKC", text).lower()
    words = _WORD.findall(text)
    english = sum(word in ENGLISH_FUNCTION_WORDS for word in words)
    foreign = (
        sum(word in FOREIGN_FUNCTION_WORDS or bool(_ACCENTED.search(word)) for word in words)
        + text.count("¿")
        + text.count("¡")
    )
    return english, foreign


def looks_english(text: str) -> bool:
    """Whether a question reads as English (ties, such as keyword questions, count as English)."""
    english, foreign = function_word_counts(text)
    return foreign <= english


def tidy_question(text: str) -> str:
    """A question as stored: runs of whitespace (newlines, tabs) made one space, ends trimmed."""
    return " ".join(text.split())


def question_key(text: str) -> str:
    """The same question however it is cased or spaced (knowledge.ExampleQuestion.key)."""
    return hashlib.sha256(tidy_question(text.casefold()).encode()).hexdigest()
