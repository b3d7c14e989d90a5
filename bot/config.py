"""The bot's configuration for one answer: a prompt version's settings, or the built-in default
made of today's settings (SYSTEM_PROMPT, OPENAI_MODEL, OPENAI_TEMPERATURE, OPENAI_MAX_TOKENS,
KB_PROMPT_TOKENS, CHAT_HISTORY_TOKENS).

Prompt versions, A/B experiments and model prices belong to the prompt studio, an app built on
this one: it plugs them in at start-up (`use_source`, from studio/apps.py), so neither the bot
nor the conversations app imports it. Without the studio the bot answers with the default and
prices nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.conf import settings

from bot.types import ModelLimits


@dataclass(frozen=True)
class BotConfig:
    """The settings of one answer: a prompt version's, or the built-in default's."""

    version_id: int | None  # the prompt version's id; None for the built-in default
    system_prompt: str  # the template (bot/prompt.py)
    provider: str  # "" = as configured (LLM_PROVIDER)
    model: str  # "" = OPENAI_MODEL
    temperature: float
    top_p: float | None  # None = not sent (the default)
    max_tokens: int
    stop: tuple[str, ...]
    history_tokens: int
    knowledge_tokens: int
    # The model account's budget a minute (bot/providers/budget.py); None: the environment's.
    requests_per_min: int | None = None
    tokens_per_min: int | None = None

    @property
    def request_model(self) -> str:
        return self.model or str(settings.OPENAI_MODEL)

    @property
    def model_limits(self) -> ModelLimits:
        return ModelLimits(self.requests_per_min, self.tokens_per_min)


def default_config() -> BotConfig:
    return BotConfig(
        version_id=None,
        system_prompt=str(settings.SYSTEM_PROMPT),
        provider="",
        model="",
        temperature=float(settings.OPENAI_TEMPERATURE),
        top_p=None,
        max_tokens=int(settings.OPENAI_MAX_TOKENS),
        stop=(),
        history_tokens=int(settings.CHAT_HISTORY_TOKENS),
        knowledge_tokens=int(settings.KB_PROMPT_TOKENS),
    )


@dataclass(frozen=True)
class Price:
    cost: Decimal
    currency: str


class ConfigSource(Protocol):
    """Where the bot's configuration comes from (the prompt studio plugs in its own)."""

    def for_conversation(self, conversation_id: uuid.UUID | str | None) -> BotConfig:
        """The configuration a reply in this conversation uses (None: no conversation)."""

    def active(self) -> BotConfig:
        """The configuration answers outside a conversation use (eval_kb)."""

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> Price | None:
        """What these tokens cost, or None when the model has no price."""


class DefaultSource:
    """The built-in default for every answer, and no prices."""

    def for_conversation(self, conversation_id: uuid.UUID | str | None) -> BotConfig:
        return default_config()

    def active(self) -> BotConfig:
        return default_config()

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> Price | None:
        return None


_source: ConfigSource = DefaultSource()


def use_source(source: ConfigSource) -> None:
    """Make `source` the bot's configuration from now on (an app's ready())."""
    global _source
    _source = source


def for_conversation(conversation_id: uuid.UUID | str | None) -> BotConfig:
    """The configuration of a reply in this conversation, read once a reply, so a change takes
    effect from the next turn."""
    return _source.for_conversation(conversation_id)


def active() -> BotConfig:
    return _source.active()


def price(model: str, prompt_tokens: int, completion_tokens: int) -> Price | None:
    return _source.price(model, prompt_tokens, completion_tokens) if model else None


def cost_of(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What a reply's tokens cost; 0 for a model without a price (the offline answerer)."""
    found = price(model, prompt_tokens, completion_tokens)
    return found.cost if found is not None else Decimal(0)
