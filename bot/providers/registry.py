"""Which provider answers is configuration (LLM_PROVIDER, OPENAI_*, or a prompt version that
names one), not code. Each is built once per process and shared by its threads."""

from __future__ import annotations

import threading

from django.conf import settings

from bot.config import BotConfig

from .base import Provider
from .budget import BudgetedProvider, ModelBudget
from .hedge import HedgedProvider
from .offline import OfflineProvider

_lock = threading.Lock()
_cached: tuple[tuple[object, ...], Provider] | None = None
# Providers a prompt version names explicitly ("openai", "offline"), by name.
_named: dict[str, tuple[tuple[object, ...], Provider]] = {}


def _config() -> tuple[object, ...]:
    return (
        settings.LLM_PROVIDER,
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL,
        settings.OPENAI_MODEL,
        settings.OPENAI_CONNECT_TIMEOUT_S,
        settings.OPENAI_READ_TIMEOUT_S,
        settings.OPENAI_HEDGE_AFTER_S,
    )


def provider_name() -> str:
    if settings.LLM_PROVIDER == "auto":
        return "openai" if settings.OPENAI_API_KEY else "offline"
    return settings.LLM_PROVIDER


def get_provider() -> Provider:
    """The configured provider, built once per process (and again if settings change)."""
    global _cached
    config = _config()
    with _lock:
        if _cached is None or _cached[0] != config:
            _cached = (config, _build(provider_name()))
        return _cached[1]


def get_named_provider(name: str) -> Provider:
    """A provider by name (a prompt version's `provider`), built once per process as well."""
    config = _config()
    with _lock:
        cached = _named.get(name)
        if cached is None or cached[0] != config:
            cached = (config, _build(name))
            _named[name] = cached
        return cached[1]


def for_config(config: BotConfig) -> Provider:
    """The provider a prompt version names, or the configured one."""
    if config.provider:
        return get_named_provider(config.provider)
    return get_provider()


def _build(name: str) -> Provider:
    if name == "openai":
        # The openai package takes most of a second to import: processes on the offline
        # answerer (the embedded default, most tests) never pay for it.
        from .openai import OpenAIProvider

        model = OpenAIProvider(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL,
            model=settings.OPENAI_MODEL,
            connect_timeout=settings.OPENAI_CONNECT_TIMEOUT_S,
            read_timeout=settings.OPENAI_READ_TIMEOUT_S,
        )
        budget = ModelBudget(
            name,
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
            model=settings.OPENAI_MODEL,
        )
        # The budget's wait comes before the hedge's clock; a hedge takes a turn of its own.
        hedged = HedgedProvider(
            model, after_s=settings.OPENAI_HEDGE_AFTER_S, admit_hedge=budget.admit_now
        )
        return BudgetedProvider(hedged, budget)
    if name == "offline":
        return OfflineProvider()
    raise ValueError(f"Unknown LLM_PROVIDER {name!r}: use auto, openai or offline.")
