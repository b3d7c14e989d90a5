"""Small talk: messages made only of greetings, thanks, goodbyes and the like, which look
nothing up and never abstain, and the bot's replies to them."""

from __future__ import annotations

import re

from django.conf import settings

from bot.wording import ENGLISH, Wording

# English, then German, French, Spanish and Italian (the languages of bot/wording.py).
_GREETING = (
    r"(?:hi|hello|hey|hiya|howdy|yo|hallo|greetings|good (?:morning|afternoon|evening|day)"
    r"|guten (?:tag|morgen|abend)|servus|moin|grüß gott|bonjour|bonsoir|salut|coucou|hola"
    r"|buen(?:os|as) (?:días|dias|tardes|noches)|buenas|ciao|salve|buongiorno|buonasera)"
)
_THANKS = (
    r"(?:thanks|thank you|thank u|thx|ty|cheers|many thanks|much appreciated|appreciate it"
    r"|great thanks|perfect thanks|danke(?: schön| sehr)?|vielen dank|merci(?: beaucoup)?"
    r"|(?:muchas )?gracias|grazie(?: mille)?)"
)
_BYE = (
    r"(?:bye|goodbye|bye bye|see you|see ya|cya|talk (?:to you )?later"
    r"|have a (?:nice|good|great) (?:day|evening|weekend|one)"
    r"|tschüss|tschüs|auf wiedersehen|bis bald|au revoir|à bientôt|a bientot|adiós|adios"
    r"|hasta luego|arrivederci|a presto)"
)
_HOW_ARE_YOU = (
    r"(?:how are you(?: doing)?(?: today)?|how's it going|how are things"
    r"|wie geht's|wie geht es (?:ihnen|dir)|comment allez vous|comment ça va"
    r"|cómo está|como esta|cómo estás|como estas|come sta|come stai)"
)
_ACK = (
    r"(?:ok|okay|k|cool|great|perfect|awesome|nice|alright|all right|got it|sounds good"
    r"|understood|alles klar|verstanden|super|d'accord|parfait|compris|vale|perfecto"
    r"|entendido|va bene|perfetto|capito)"
)
# "No" and "no thanks" (to the bot's offer of a person, or anything else); not "no problem".
_DECLINE = (
    r"(?:not now|not needed|no need|i'm good|im good|i'm fine|im fine|nicht nötig|nicht jetzt"
    r"|pas besoin|pas maintenant|no hace falta|no es necesario|ahora no|non serve|non ora"
    r"|nope|nah|nein|nee|non|no(?! problem))"
)
_WHO = r"(?:who are you|what are you|are you (?:a )?(?:bot|robot|human|real|ai|person))"
_FILL = r"(?:there|team|all|everyone|again|so much|very much|a lot|a bunch|for (?:the|your) help)"

_SMALL_TALK_PARTS = {
    "greeting": _GREETING,
    "thanks": _THANKS,
    "bye": _BYE,
    "how": _HOW_ARE_YOU,
    "ack": _ACK,
    "decline": _DECLINE,
    "who": _WHO,
}
_PART = re.compile(
    r"\s*(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _SMALL_TALK_PARTS.items()) + r")\b"
    r"(?:\s+" + _FILL + r"\b)*\s*"
)


# Words of small talk that only one of the bot's languages uses: "Danke!" is too short for
# language detection, yet says German.
_LANGUAGE_OF_SMALL_TALK = {
    "de": re.compile(
        r"\b(?:hallo|guten|servus|moin|grüß|danke|dank|tschüss|tschüs|wiedersehen|bis bald"
        r"|wie geht|alles klar|verstanden|nein|nicht nötig|nicht jetzt)\b"
    ),
    "fr": re.compile(
        r"\b(?:bonjour|bonsoir|salut|coucou|merci|au revoir|bientôt|bientot|comment|ça va"
        r"|d'accord|parfait|compris|pas besoin|pas maintenant)\b"
    ),
    "es": re.compile(
        r"\b(?:hola|buenos|buenas|gracias|adiós|adios|hasta luego|cómo|vale|perfecto"
        r"|entendido|no hace falta|no es necesario|ahora no)\b"
    ),
    "it": re.compile(
        r"\b(?:ciao|salve|buongiorno|buonasera|grazie|arrivederci|a presto|come sta|va bene"
        r"|perfetto|capito|non serve|non ora)\b"
    ),
}


def small_talk_language(message: str) -> str | None:
    """The language small talk is in, when its words say it ("Danke!" is German), else None."""
    text = message.lower()
    found = [code for code, words in _LANGUAGE_OF_SMALL_TALK.items() if words.search(text)]
    return found[0] if len(found) == 1 else None


def small_talk_kinds(message: str) -> set[str] | None:
    """The kinds of small talk a message is made of ({"greeting", "thanks"} for "hi, thanks!"),
    or None if it is (also) something else, such as a question."""
    text = re.sub(r"[^\w\s']+", " ", message.lower().replace("\u2019", "'"))
    text = re.sub(r"\s+", " ", text).strip()
    if not text or len(text) > 80:
        return None
    kinds: set[str] = set()
    position = 0
    while position < len(text):
        match = _PART.match(text, position)
        if not match or match.end() == position:
            return None
        kinds.update(name for name, value in match.groupdict().items() if value)
        position = match.end()
    return kinds or None


def small_talk_reply(kinds: set[str], wording: Wording = ENGLISH) -> str:
    """The bot's reply to small talk of these kinds, in `wording`'s language."""
    company = str(settings.COMPANY_NAME)
    if "bye" in kinds:
        return wording.welcome_and_bye if "thanks" in kinds else wording.bye
    if "decline" in kinds:
        return wording.declined
    if "thanks" in kinds:
        return wording.welcome
    if "who" in kinds:
        return wording.who.format(company=company)
    if "how" in kinds:
        return wording.how_are_you
    if "greeting" in kinds:
        return wording.greeting.format(company=company)
    return wording.acknowledged
