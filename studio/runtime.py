"""What a prompt version means at reply time: which settings a reply uses, its rendered system
prompt, its history within the context budget, and what its tokens cost.

For each reply the version is the conversation's A/B arm (studio.experiments.arm_for), else the
active version, else none: the built-in default made of today's settings (SYSTEM_PROMPT,
OPENAI_MODEL, OPENAI_TEMPERATURE, OPENAI_MAX_TOKENS, KB_PROMPT_TOKENS, CHAT_HISTORY_TOKENS).

System prompt templates know four variables: {company} (COMPANY_NAME), {language} (a guess
from the customer's latest message: "English", "German", ... or the words "the customer's
language" when the guess is unsure), {customer_name} (the customer's display name, or "the
customer") and {passages} (the knowledge block: the rules and the numbered passages; appended
after the prompt when the template has no {passages}). Only these exact placeholders are
replaced; any other braces in an operator's text stay as written.

Bounded context: the history sent verbatim is the newest turns that fit `history_tokens`
(estimated) and CHAT_HISTORY_TURNS; when older turns don't fit, they are replaced by one
extractive line ("Earlier in this conversation, the customer asked about: ...") capped at
SUMMARY_MAX_TOKENS, which counts towards the same budget. So the prompt stops growing once a
conversation is longer than its budget.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from django.conf import settings

from conversations.llm.base import ChatMessage, ReplyRequest, estimate_tokens
from support_bot import config_cache

from .models import ModelPrice, PromptVersion

SUMMARY_MAX_TOKENS = 120
# Older turns read (beyond those sent verbatim) to summarise: one bounded query whatever the
# conversation's length.
SUMMARY_SCAN_TURNS = 30
SUMMARY_WORDS_PER_QUESTION = 14
SUMMARY_LEAD = "Earlier in this conversation, the customer asked about: "
UNKNOWN_LANGUAGE = "the customer's language"


@dataclass(frozen=True)
class BotConfig:
    """The settings of one reply: a prompt version's, or the built-in default's."""

    version: PromptVersion | None
    system_prompt: str  # the template
    provider: str  # "" = as configured (LLM_PROVIDER)
    model: str  # "" = OPENAI_MODEL
    temperature: float
    top_p: float | None  # None = not sent (the default)
    max_tokens: int
    stop: tuple[str, ...]
    history_tokens: int
    knowledge_tokens: int

    @property
    def request_model(self) -> str:
        return self.model or str(settings.OPENAI_MODEL)


def default_config() -> BotConfig:
    return BotConfig(
        version=None,
        system_prompt=str(settings.SYSTEM_PROMPT),
        provider="",
        model="",
        temperature=float(settings.OPENAI_TEMPERATURE),
        top_p=None,
        max_tokens=int(settings.OPENAI_MAX_TOKENS),
        stop=(),
        history_tokens=int(settings.CHAT_HISTORY_TOKENS),
        knowledge_tokens=int(getattr(settings, "KB_PROMPT_TOKENS", 1200)),
    )


def config_for(version: PromptVersion | None) -> BotConfig:
    if version is None:
        return default_config()
    return BotConfig(
        version=version,
        system_prompt=version.system_prompt,
        provider=version.provider,
        model=version.model.strip(),
        temperature=version.temperature,
        top_p=version.top_p,
        max_tokens=version.max_tokens,
        stop=tuple(str(s) for s in (version.stop or []) if str(s)),
        history_tokens=max(1, version.history_tokens),
        knowledge_tokens=max(1, version.knowledge_tokens),
    )


def version_for(conversation_id: uuid.UUID | str | None) -> PromptVersion | None:
    """The conversation's A/B arm while an experiment runs, else the active version."""
    from . import experiments, services

    if conversation_id is not None:
        arm = experiments.arm_for(conversation_id)
        if arm is not None:
            return arm
    return services.active_version()


def config_for_conversation(conversation_id: uuid.UUID | str | None) -> BotConfig:
    return config_for(version_for(conversation_id))


def request_for(
    version: PromptVersion | None, messages: Sequence[ChatMessage], customer_name: str = ""
) -> ReplyRequest:
    """The request the bot sends with this version (None: the built-in default) for these
    conversation messages (without a system message: the version brings its own), exactly as
    a reply builds it: rendered prompt, history within the budget, grounded passages."""
    from conversations.services import grounded_request  # conversations.services imports us

    bot = config_for(version)
    kept, summary = fit_history(list(messages), bot.history_tokens)
    latest = next((m.content for m in reversed(messages) if m.role == "user"), "")
    system = render_system_prompt(
        bot.system_prompt,
        language=guess_language(latest) if latest else UNKNOWN_LANGUAGE,
        customer_name=customer_name,
    )
    if summary:
        system = f"{system}\n\n{summary}"
    return grounded_request([ChatMessage("system", system), *kept], bot)


# --- The system prompt -----------------------------------------------------------------------

PASSAGES = "{passages}"
_VARIABLE = re.compile(r"\{(company|language|customer_name)\}")


def render_system_prompt(
    template: str, *, language: str = UNKNOWN_LANGUAGE, customer_name: str = ""
) -> str:
    """The template with {company}, {language} and {customer_name} filled in; {passages} stays
    for grounding.with_knowledge. Any other braces are left exactly as written."""
    values = {
        "company": str(settings.COMPANY_NAME),
        "language": language,
        # No braces from a customer's name can become a placeholder.
        "customer_name": re.sub(r"[{}]", "", customer_name).strip() or "the customer",
    }
    return _VARIABLE.sub(lambda m: values[m.group(1)], template)


def uses_variable(template: str, name: str) -> bool:
    return "{" + name + "}" in template


# A small stop-word guess: enough to tell the model which language to answer in, never a
# reason to fail. Unsure → "the customer's language".
_LANGUAGE_WORDS = {
    "English": "the and is are you your my i to of it how what can do does not with for have",
    "German": "der die das und ist ich nicht wie was mein meine ein eine sie ich kann mit für",
    "French": "le la les et est je ne pas comment mon ma un une vous avec pour est-ce que",
    "Spanish": "el la los las y es yo no cómo como mi un una usted con para qué puedo está",
    "Dutch": "de het en is ik niet hoe wat mijn een u met voor kan ik heb",
    "Italian": "il lo la gli e è io non come mio mia un una con per che posso",
    "Portuguese": "o a os as e é eu não como meu minha um uma você com para que posso",
}
_WORDS = {name: set(words.split()) for name, words in _LANGUAGE_WORDS.items()}


def guess_language(text: str) -> str:
    words = re.findall(r"[\w'-]+", text.lower())
    if not words:
        return UNKNOWN_LANGUAGE
    scores = sorted(
        ((sum(1 for w in words if w in vocab), name) for name, vocab in _WORDS.items()),
        reverse=True,
    )
    (best, name), (second, _other) = scores[0], scores[1]
    if best >= 2 and best > second:
        return name
    return UNKNOWN_LANGUAGE


# --- History within the budget ------------------------------------------------------------------


def _message_tokens(message: ChatMessage) -> int:
    return estimate_tokens(message.content) + 1  # about one more for the role


def history_scan_limit() -> int:
    return int(settings.CHAT_HISTORY_TURNS) + SUMMARY_SCAN_TURNS


def summary_line(questions: Sequence[str], cap: int) -> str:
    """ "Earlier in this conversation, the customer asked about: a; b." from the newest of these
    questions (oldest first) that fit `cap` estimated tokens; "" when none fits."""
    short: list[str] = []
    for question in questions:
        first = re.split(r"(?<=[.!?])\s", " ".join(question.split()), maxsplit=1)[0]
        words = first.split()
        if len(words) > SUMMARY_WORDS_PER_QUESTION:
            first = " ".join(words[:SUMMARY_WORDS_PER_QUESTION]) + " …"
        if first:
            short.append(first.rstrip(".!?"))
    picked: list[str] = []
    for item in reversed(short):
        candidate = SUMMARY_LEAD + "; ".join([item, *picked]) + "."
        if estimate_tokens(candidate) > cap:
            break
        picked.insert(0, item)
    return SUMMARY_LEAD + "; ".join(picked) + "." if picked else ""


def fit_history(messages: Sequence[ChatMessage], budget: int) -> tuple[list[ChatMessage], str]:
    """The newest messages (oldest first) that fit `budget` estimated tokens, and a summary line
    of the customer's dropped messages. The latest message is always kept; the summary's cap
    (SUMMARY_MAX_TOKENS, at most a quarter of the budget) is reserved from the budget whenever
    anything is dropped."""
    limit = max(1, int(settings.CHAT_HISTORY_TURNS))
    total = sum(_message_tokens(m) for m in messages)
    if total <= budget and len(messages) <= limit:
        return list(messages), ""
    cap = min(SUMMARY_MAX_TOKENS, budget // 4)
    room = budget - cap
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(messages):
        cost = _message_tokens(message)
        if kept and (used + cost > room or len(kept) >= limit):
            break
        kept.insert(0, message)
        used += cost
    dropped = messages[: len(messages) - len(kept)]
    questions = [m.content for m in dropped if m.role == "user"]
    return kept, summary_line(questions, cap) if cap > 0 else ""


# --- Cost ----------------------------------------------------------------------------------------


@config_cache.cached
def model_prices() -> Mapping[str, ModelPrice]:
    """Every price row by model (a short table), read once per change in each process
    (support_bot.config_cache); read-only, as the process's threads share it."""
    return MappingProxyType({price.model: price for price in ModelPrice.objects.all()})


def price_for(model: str) -> ModelPrice | None:
    """The price row of a model; a fine-tuned id ("ft:gpt-4o-mini:acme::abc") without its own
    row is priced as its base model."""
    if not model:
        return None
    names = [model]
    if model.startswith("ft:") and model.count(":") >= 1:
        names.append(model.split(":")[1])
    prices = model_prices()
    for name in names:
        if name in prices:
            return prices[name]
    return None


def cost_of(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What a turn's tokens cost; 0 for a model without a price row (the offline answerer)."""
    price = price_for(model)
    if price is None:
        return Decimal(0)
    return price.cost(prompt_tokens, completion_tokens)
