"""AI assist for agents: a summary of the conversation and a suggested reply, made by the bot
(bot/) with the conversation's prompt version (the active one, or its A/B arm), as a reply
would be: the same provider, model, temperature and budgets. Nothing here sends anything to
the customer: the result goes to the agent, who edits it and decides whether to send it.

Both lead with the customer's latest open problem, not the first message (bot/assist.py):

- the summary names that problem first, then the earlier topics; a model is given the whole
  conversation within the version's budget (bot.prompt.assist_summary_request). With the
  offline answerer the summary is extractive by the same rule;
- the suggestion is what the bot would reply to that problem: the same request
  (conversations.replies.request_for_conversation), grounded in the passages retrieved for it,
  with the articles it cites as sources, and the same abstain rule. When the customer only
  added small talk after the problem ("hello??"), it answers the problem.

Internal notes (inbox.Note) are never read here: nothing of them can reach a draft.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from bot import assist as reading
from bot import config as bot_config
from bot import run
from bot.prompt import assist_summary_request, uses_variable
from bot.providers import registry
from bot.types import ChatMessage, ProviderError
from conversations import selectors
from conversations.models import Conversation, Turn
from conversations.replies import request_for_conversation

logger = logging.getLogger(__name__)

# The newest turns read for the summary (one bounded query however long the conversation);
# the first customer message is read apart when it is older.
SCAN_TURNS = 200

NOTHING_FOUND = (
    "The help articles have nothing good enough on this; please write the reply yourself."
)


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


@dataclass(frozen=True)
class Reading:
    lines: list[reading.Line]
    ids: list[int]  # each line's turn id
    left_out: int  # turns between the first line and the rest that were not read


def read_conversation(conversation: Conversation) -> Reading:
    """The turns assist reads, oldest first: what the customer, the bot and agents said and the
    system notices, without failed or withdrawn replies (notes are another table). A bounded
    number of queries: the newest SCAN_TURNS turns and, when the conversation is longer, its
    first customer message and how many turns lie between.

    The last resolution (Conversation.resolved_at: kept when the customer writes again, cleared
    when an agent reopens) is marked on the first turn after it: what came before is closed."""
    turns = (
        Turn.objects.filter(conversation_id=conversation.pk)
        .shown()
        .exclude(status=Turn.Status.FAILED)
        .exclude(text="")
    )
    fields = ("id", "author", "text", "created_at")
    rows = list(turns.order_by("-id").values_list(*fields)[:SCAN_TURNS])
    rows.reverse()
    left_out = 0
    if len(rows) == SCAN_TURNS:
        first = (
            turns.filter(author=Turn.Author.CUSTOMER, id__lt=rows[0][0])
            .order_by("id")
            .values_list(*fields)
            .first()
        )
        if first is not None:
            left_out = turns.filter(id__gt=first[0], id__lt=rows[0][0]).count()
            rows.insert(0, first)
    resolved_at = conversation.resolved_at
    marked = False
    lines: list[reading.Line] = []
    for _, author, text, created_at in rows:
        resolves = not marked and resolved_at is not None and created_at >= resolved_at
        marked = marked or resolves
        lines.append(reading.Line(author, text, resolves=resolves))
    return Reading(lines, [row[0] for row in rows], left_out)


def _facts(conversation: Conversation) -> list[str]:
    facts = [f"Status: {conversation.get_status_display()}"]
    if conversation.escalation_reason:
        facts.append(f"escalated: {conversation.get_escalation_reason_display()}")
    return facts


def summary(conversation: Conversation) -> AssistResult:
    read = read_conversation(conversation)
    config = bot_config.for_conversation(conversation.pk)
    provider = registry.for_config(config)
    fallback = reading.extractive_summary(read.lines, _facts(conversation))
    found = reading.topics(read.lines)
    if provider.name == "offline" or not found:
        return AssistResult("summary", fallback)
    problem = reading.latest_problem(found)
    name = ""
    if uses_variable(config.system_prompt, "customer_name"):
        name = selectors.customer_name(conversation.pk)
    request = assist_summary_request(
        config,
        # The summary has no passages: the version's knowledge budget goes to the transcript.
        reading.transcript(
            read.lines,
            config.history_tokens + config.knowledge_tokens,
            left_out_before=read.left_out,
        ),
        latest_problem=problem.text if problem else "",
        earlier_topics=[t.text for t in reversed(found) if t is not problem],
        customer_name=name,
    )
    answer = run.answer(request, provider)
    # A model that answers the no-answer marker (or nothing) leaves the extractive summary.
    text = "" if answer.abstained else answer.text.strip()
    return AssistResult("summary", text or fallback)


def _messages_for_suggestion(conversation: Conversation) -> list[ChatMessage]:
    """What the suggestion answers: the dialogue up to the customer's last message, or up to
    the latest problem's last message when only small talk came after it."""
    messages = selectors.dialogue_to_answer(conversation.pk)
    if not messages:
        return messages
    read = read_conversation(conversation)
    problem = reading.latest_problem(reading.topics(read.lines))
    if problem is None:
        return messages
    later = read.lines[problem.last + 1 :]
    if any(line.author == Turn.Author.CUSTOMER for line in later):
        # Only small talk since (a later question would be the problem): answer the problem.
        return selectors.dialogue(conversation.pk, before=read.ids[problem.last] + 1)
    return messages


def suggestion(conversation: Conversation) -> AssistResult:
    """A draft answer to the customer's latest problem: what the bot would reply, with the
    articles it cites."""
    messages = _messages_for_suggestion(conversation)
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


# What the agent reads when assist fails; nothing is stored either way.
FAILED = "The assistant couldn't help with this just now. Please try again."
MODEL_DOWN = (
    "The model didn't answer just now. Please try again in a moment, or write the reply yourself."
)
MODEL_REFUSED = (
    "The model refused the request (an operator should check the prompt version's provider "
    "settings). Please write the reply yourself."
)
GONE = "This conversation no longer exists."


def assist_frame(conversation_id: uuid.UUID | str, kind: str) -> dict[str, Any]:
    """The assist frame for the agent who asked: the result, or an error and its code."""
    try:
        return run_assist(conversation_id, kind).frame(conversation_id)
    except Conversation.DoesNotExist:
        error, code = GONE, "not_found"
    except ProviderError as failure:
        logger.warning("assist %s for %s: the model failed: %s", kind, conversation_id, failure)
        error = MODEL_REFUSED if failure.permanent else MODEL_DOWN
        code = "model_unavailable"
    except Exception:
        logger.exception("assist %s for conversation %s failed", kind, conversation_id)
        error, code = FAILED, "assist_failed"
    return {
        "type": "assist",
        "conversation_id": str(conversation_id),
        "kind": kind,
        "text": "",
        "sources": [],
        "error": error,
        "code": code,
    }


def run_assist(conversation_id: uuid.UUID | str, kind: str) -> AssistResult:
    conversation = Conversation.objects.get(pk=conversation_id)
    if kind == "summary":
        return summary(conversation)
    return suggestion(conversation)
