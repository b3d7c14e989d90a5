"""The first screen: what the chat page and the widget show a visitor before their first
message (issue 16.3). A greeting and a few suggested questions, both edited by operators in the
admin (Greeting, SuggestedQuestion), and whether the team answers now (availability.py).

The visitor has written nothing yet, so their language is their browser's (Accept-Language):
the first one there that has words here, an operator's greeting or suggestions, or the bot's
catalog (bot/wording.py); English otherwise. Viewing it stores nothing. See docs/widget.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.utils.translation.trans_real import parse_accept_lang_header

from bot.wording import ENGLISH, WORDINGS, wording_for
from support_bot import config_cache

from .availability import customer_availability
from .models import Greeting, SuggestedQuestion

# "3-4 questions": more would push the composer out of a phone's first screen.
MAX_SUGGESTIONS = 4
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


@config_cache.cached
def greetings() -> Mapping[str, str]:
    """The operators' greetings by language ("" for any), read once per change per process."""
    return MappingProxyType(dict(Greeting.objects.values_list("language", "text")))


@config_cache.cached
def suggestions() -> tuple[tuple[str, str], ...]:
    """The enabled suggested questions as (language, text), in order."""
    rows = SuggestedQuestion.objects.filter(enabled=True).order_by("language", "position", "id")
    return tuple(
        (language.lower(), text) for language, text in rows.values_list("language", "text")
    )


def visitor_language(accept_language: str) -> str:
    """The first language of an Accept-Language header ("de-CH,de;q=0.9,en;q=0.8") that has
    words here, as a primary code ("de"); "en" when none has."""
    known = set(WORDINGS) | {code.lower() for code in greetings() if code}
    known |= {language for language, _ in suggestions() if language}
    try:
        ranked = parse_accept_lang_header(accept_language[:255])
    except ValueError:
        ranked = ()
    for tag, _quality in ranked:
        code = tag.split("-", 1)[0].lower()
        if _LANGUAGE.match(code) and code in known:
            return code
    return ENGLISH.language


def greeting(language: str) -> str:
    """The operators' greeting in the language, else the bot's own in it (bot/wording.py), else
    the operators' greeting for any language, else the bot's English one."""
    own = greetings()
    if language in own:
        return own[language]
    if language in WORDINGS and language != ENGLISH.language:
        return WORDINGS[language].greeting.format(company=settings.COMPANY_NAME)
    return own.get("") or ENGLISH.greeting.format(company=settings.COMPANY_NAME)


def suggested_questions(language: str) -> list[str]:
    """The enabled suggestions in the language, else those for any language (at most
    MAX_SUGGESTIONS)."""
    rows = suggestions()
    chosen = [text for code, text in rows if code == language] or [
        text for code, text in rows if not code
    ]
    return chosen[:MAX_SUGGESTIONS]


def first_screen(language: str) -> dict[str, Any]:
    """What the page shows before the first message (rendered into the page as JSON)."""
    return {
        "language": language,
        "greeting": greeting(language),
        "suggestions": suggested_questions(language),
        "availability": customer_availability(wording_for(language)),
    }
