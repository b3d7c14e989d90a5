"""Small talk: messages made only of greetings, thanks, goodbyes and the like, which look
nothing up and never abstain, and the bot's replies to them."""

from __future__ import annotations

import re

from django.conf import settings

from bot.wording import ENGLISH, Wording

_GREETING = r"(?:hi|hello|hey|hiya|howdy|yo|hallo|greetings|good (?:morning|afternoon|evening|day))"
_THANKS = (
    r"(?:thanks|thank you|thank u|thx|ty|cheers|many thanks|much appreciated|appreciate it"
    r"|great thanks|perfect thanks)"
)
_BYE = (
    r"(?:bye|goodbye|bye bye|see you|see ya|cya|talk (?:to you )?later"
    r"|have a (?:nice|good|great) (?:day|evening|weekend|one))"
)
_HOW_ARE_YOU = r"(?:how are you(?: doing)?(?: today)?|how's it going|how are things)"
_ACK = (
    r"(?:ok|okay|k|cool|great|perfect|awesome|nice|alright|all right|got it|sounds good"
    r"|understood)"
)
_WHO = r"(?:who are you|what are you|are you (?:a )?(?:bot|robot|human|real|ai|person))"
_FILL = r"(?:there|team|all|everyone|again|so much|very much|a lot|a bunch|for (?:the|your) help)"

_SMALL_TALK_PARTS = {
    "greeting": _GREETING,
    "thanks": _THANKS,
    "bye": _BYE,
    "how": _HOW_ARE_YOU,
    "ack": _ACK,
    "who": _WHO,
}
_PART = re.compile(
    r"\s*(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _SMALL_TALK_PARTS.items()) + r")\b"
    r"(?:\s+" + _FILL + r"\b)*\s*"
)


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
    if "thanks" in kinds:
        return wording.welcome
    if "who" in kinds:
        return wording.who.format(company=company)
    if "how" in kinds:
        return wording.how_are_you
    if "greeting" in kinds:
        return wording.greeting.format(company=company)
    return wording.acknowledged
