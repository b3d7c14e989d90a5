"""How the prompt studio plugs into the bot (bot/config.py): which prompt version a reply
uses, and what its tokens cost.

For each reply the version is the conversation's A/B arm (experiments.arm_for), else the
active version, else none: the bot's built-in default made of today's settings. Versions,
experiments and prices are read through the process's configuration cache, so a change takes
effect from the next reply in every process.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType

from bot.config import BotConfig, Price, default_config
from support_bot import config_cache

from . import experiments
from .models import ModelPrice, PromptVersion
from .selectors import active_version


def config_for(version: PromptVersion | None) -> BotConfig:
    """The bot's configuration with this version (None: the built-in default)."""
    if version is None:
        return default_config()
    return BotConfig(
        version_id=version.pk,
        system_prompt=version.system_prompt,
        provider=version.provider,
        model=version.model.strip(),
        temperature=version.temperature,
        top_p=version.top_p,
        max_tokens=version.max_tokens,
        stop=tuple(str(s) for s in (version.stop or []) if str(s)),
        history_tokens=max(1, version.history_tokens),
        knowledge_tokens=max(1, version.knowledge_tokens),
        requests_per_min=version.requests_per_min,
        tokens_per_min=version.tokens_per_min,
    )


def version_for(conversation_id: uuid.UUID | str | None) -> PromptVersion | None:
    """The conversation's A/B arm while an experiment runs, else the active version."""
    if conversation_id is not None:
        arm = experiments.arm_for(conversation_id)
        if arm is not None:
            return arm
    return active_version()


class StudioSource:
    """The bot's configuration from prompt versions and experiments, priced by ModelPrice
    (registered in apps.py)."""

    def for_conversation(self, conversation_id: uuid.UUID | str | None) -> BotConfig:
        return config_for(version_for(conversation_id))

    def active(self) -> BotConfig:
        return config_for(active_version())

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> Price | None:
        row = price_for(model)
        if row is None:
            return None
        return Price(row.cost(prompt_tokens, completion_tokens), row.currency)


# --- Prices ------------------------------------------------------------------------------------


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
