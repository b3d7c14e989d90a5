"""The bot as eval_kb's answerer: each question answered as a one-message conversation,
grounded and abstaining exactly as a reply would be (knowledge/evaluation.py measures it)."""

from __future__ import annotations

from bot import config, run
from bot.prompt import build_request
from bot.providers import registry
from bot.providers.base import Provider
from bot.types import ChatMessage
from knowledge.evaluation import Answerer, AnswerOutcome

ANSWERERS = ("offline", "model")


class AnswererUnavailable(ValueError):
    """The answerer asked for can't run with this configuration; the message says why."""


def answer_question(question: str, provider: Provider | None = None) -> run.Answer:
    """The bot's answer to a conversation of one message with the active configuration, not
    streamed and not stored. `provider`: the provider to ask instead of the configuration's.
    Not retried: a ProviderError is raised as it comes."""
    bot = config.active()
    request = build_request(bot, [ChatMessage("user", question)])
    return run.answer(request, provider or registry.for_config(bot))


def bot_answerer(kind: str = "offline") -> Answerer:
    """ "offline": the offline answerer whatever is configured; "model": the configured provider
    (the active prompt version's, else LLM_PROVIDER)."""
    if kind == "offline":
        provider = registry.get_named_provider("offline")
    elif kind == "model":
        provider = registry.for_config(config.active())
        if provider.name == "offline":
            raise AnswererUnavailable(
                "--answerer model needs a model, but the offline answerer is configured: set "
                "LLM_PROVIDER=openai and OPENAI_* (or activate a prompt version that names one)."
            )
    else:
        raise AnswererUnavailable(f"unknown answerer {kind!r}: one of {', '.join(ANSWERERS)}")

    def answer(question: str) -> AnswerOutcome:
        result = answer_question(question, provider)
        return AnswerOutcome(
            abstained=result.abstained,
            source_article_ids=tuple(s.article_id for s in result.sources if s.article_id),
        )

    return answer
