"""Fine-tuning data from the conversations customers rated well."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

from django.db.models import Prefetch

from bot.config import default_config
from bot.grounding import strip_citations
from bot.prompt import guess_language, render_system_prompt
from conversations.models import Conversation, Turn

from .models import PromptVersion


def finetune_examples(
    min_rating: int = 4, since: datetime.date | None = None
) -> Iterator[dict[str, list[dict[str, str]]]]:
    """Resolved conversations rated >= min_rating as chat-format fine-tuning examples:
    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}.

    system: the prompt of the version that answered (the last bot turn's), rendered without
    passages, or the built-in default's; user: the customer's turns; assistant: the bot's and
    the agents' turns (citation markers removed). System notices, failed replies and internal
    notes are never included; consecutive turns of one role are joined; a conversation with no
    assistant turn is skipped.
    """
    conversations = Conversation.objects.filter(
        status=Conversation.Status.RESOLVED, rating__gte=min_rating
    )
    if since is not None:
        conversations = conversations.filter(resolved_at__date__gte=since)
    turns = Turn.objects.dialogue().select_related("prompt_version").order_by("id")
    queryset = (
        conversations.select_related("customer")
        .prefetch_related(Prefetch("turns", queryset=turns))
        .order_by("resolved_at", "created_at")
    )
    default = default_config()
    for conversation in queryset.iterator(chunk_size=200):
        messages: list[dict[str, str]] = []
        version: PromptVersion | None = None
        first_question = ""
        for turn in conversation.turns.all():
            text = turn.text.strip()
            if not text:
                continue
            if turn.author == Turn.Author.CUSTOMER:
                role = "user"
                first_question = first_question or text
            else:
                if turn.author == Turn.Author.BOT and turn.status != Turn.Status.DONE:
                    continue
                role = "assistant"
                text = strip_citations(text)
                if turn.prompt_version is not None:
                    version = turn.prompt_version
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + text
            else:
                messages.append({"role": role, "content": text})
        while messages and messages[-1]["role"] == "user":
            messages.pop()  # nothing answers it: no example to learn from
        if not any(m["role"] == "assistant" for m in messages):
            continue
        template = version.system_prompt if version is not None else default.system_prompt
        system = (
            render_system_prompt(
                template,
                language=guess_language(first_question),
                customer_name=conversation.customer.display_name,
            )
            .replace("{passages}", "")
            .strip()
        )
        yield {"messages": [{"role": "system", "content": system}, *messages]}


def finetune_jsonl(min_rating: int = 4, since: datetime.date | None = None) -> Iterator[str]:
    """finetune_examples as JSON Lines (one example a line, each ending in a newline)."""
    for example in finetune_examples(min_rating, since):
        yield json.dumps(example, ensure_ascii=False) + "\n"
