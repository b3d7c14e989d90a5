"""Whether a prompt version's replies come from the offline answerer, which ignores the prompt,
and the plain notice the studio shows an operator then (prompt edits would change nothing)."""

from __future__ import annotations

from django.conf import settings

from bot.providers.registry import provider_name

from .models import PromptVersion


def answers_offline(provider: str) -> bool:
    """`provider` is a version's (``""``: as configured, LLM_PROVIDER and OPENAI_API_KEY)."""
    if provider:
        return provider == PromptVersion.Provider.OFFLINE
    return provider_name() == "offline"


def offline_notice(provider: str) -> str:
    """The notice for a version with this provider; "" when a model answers."""
    if not answers_offline(provider):
        return ""
    if provider == PromptVersion.Provider.OFFLINE:
        how = "this version names the offline answerer: choose the OpenAI-compatible provider"
    elif settings.LLM_PROVIDER == "offline":
        how = "LLM_PROVIDER is set to offline: set OPENAI_API_KEY and LLM_PROVIDER=auto"
    else:
        how = "set OPENAI_API_KEY (and OPENAI_MODEL), or OPENAI_BASE_URL with LLM_PROVIDER=openai"
    return (
        "Replies come from the offline answerer: prompt edits change nothing until a model "
        f"is configured ({how})."
    )
