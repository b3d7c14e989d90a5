"""AI assist for agents: a summary of the conversation and a suggested reply, made by the bot
(bot/) with the conversation's prompt version, as a reply would be. Nothing here sends
anything to the customer: the result goes to the agent, who edits it and decides whether to
send it.

The suggestion is what the bot would reply to the customer's latest message: the same
request (conversations.replies.request_for_conversation), the same grounding and the same
abstain rule. With the offline answerer the summary is extractive (the customer's first
request and the key recent turns).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from bot import config as bot_config
from bot import run
from bot.prompt import summary_request
from bot.providers import registry
from conversations import selectors
from conversations.models import Conversation, Turn
from conversations.replies import request_for_conversation

HISTORY_TURNS = 30
RECENT_TURNS = 4
TURN_CHARS = 300

NOTHING_FOUND = (
    "The help articles have nothing good enough on this; please write the reply yourself."
)
LABELS = {"customer": "Customer", "bot": "Bot", "agent": "Agent", "system": "Notice"}


@dataclass(frozen=True)
class AssistResult:
    kind: str
    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    notice: str = ""  # for the agent, never part of a draft

    def frame(self, conversation_id: uuid.UUID | str) -> dict[str, Any]:
        return {
            "type": "assist",
            "conversation_id": str(conversation_id),
            "kind": self.kind,
            "text": self.text,
            "sources": self.sources,
            "notice": self.notice,
        }


def _turns(conversation_id: uuid.UUID | str) -> list[Turn]:
    turns = list(
        Turn.objects.filter(conversation_id=conversation_id)
        .shown()
        .exclude(status=Turn.Status.FAILED)
        .exclude(text="")
        .order_by("-id")[:HISTORY_TURNS]
    )
    turns.reverse()
    return turns


def _clip(text: str, limit: int = TURN_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def extractive_summary(conversation: Conversation, turns: list[Turn]) -> str:
    customer = [t for t in turns if t.author == Turn.Author.CUSTOMER]
    first = (
        Turn.objects.filter(conversation=conversation, author=Turn.Author.CUSTOMER)
        .order_by("id")
        .values_list("text", flat=True)
        .first()
    )
    lines: list[str] = []
    if first:
        lines.append(f"Customer's request: {_clip(first)}")
    else:
        lines.append("The customer hasn't written yet.")
    recent = [t for t in turns if t.author != Turn.Author.SYSTEM][-RECENT_TURNS:]
    if recent and not (len(recent) == 1 and recent[0].text == first):
        lines.append("Recently:")
        lines += [f"- {LABELS[t.author]}: {_clip(t.text, 200)}" for t in recent]
    facts = [f"Status: {conversation.get_status_display()}"]
    if conversation.escalation_reason:
        facts.append(f"escalated: {conversation.get_escalation_reason_display()}")
    facts.append(f"{len(customer)} customer message(s) in the last {len(turns)} turns")
    lines.append("; ".join(facts) + ".")
    return "\n".join(lines)


def _transcript(turns: list[Turn]) -> str:
    return "\n".join(f"{LABELS[t.author]}: {_clip(t.text, 1000)}" for t in turns)


def summary(conversation: Conversation) -> AssistResult:
    turns = _turns(conversation.pk)
    config = bot_config.for_conversation(conversation.pk)
    provider = registry.for_config(config)
    if provider.name == "offline" or not turns:
        return AssistResult("summary", extractive_summary(conversation, turns))
    answer = run.answer(summary_request(config, _transcript(turns)), provider)
    return AssistResult("summary", answer.text.strip() or extractive_summary(conversation, turns))


def suggestion(conversation: Conversation) -> AssistResult:
    """A draft answer to the customer's latest message: what the bot would reply."""
    messages = selectors.dialogue_to_answer(conversation.pk)
    if not messages:
        return AssistResult("suggest", "", notice="The customer hasn't asked anything yet.")
    config = bot_config.for_conversation(conversation.pk)
    provider = registry.for_config(config)
    request = request_for_conversation(config, conversation.pk, messages, provider)
    answer = run.answer(request, provider)
    if answer.abstained:
        # Retrieval found nothing good enough (no model was asked), or the model found no
        # answer in the passages: the bot's abstain words are no draft.
        return AssistResult("suggest", "", notice=NOTHING_FOUND)
    return AssistResult("suggest", answer.text.strip(), [s.as_dict() for s in answer.sources])


def run_assist(conversation_id: uuid.UUID | str, kind: str) -> AssistResult:
    conversation = Conversation.objects.get(pk=conversation_id)
    if kind == "summary":
        return summary(conversation)
    return suggestion(conversation)
