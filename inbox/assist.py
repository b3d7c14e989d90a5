"""AI assist for agents: a summary of the conversation and a suggested reply, by the configured
provider. Nothing here sends anything to the customer: the result goes to the agent, who
edits it and decides whether to send it.

With the offline answerer the summary is extractive (the customer's first request and the
key recent turns) and the suggestion is the knowledge base's answer to the customer's latest
question (the same grounding and the same abstain rule as the bot's replies).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from conversations import grounding, llm
from conversations.llm.base import ChatMessage, Finished, ReplyRequest, TextDelta
from conversations.models import Conversation, Turn
from conversations.services import grounded_request, reply_sources

HISTORY_TURNS = 30
RECENT_TURNS = 4
TURN_CHARS = 300

SUMMARY_PROMPT = (
    "You help a customer-support agent. Summarise the conversation below for the agent in at "
    "most five short bullet points: what the customer wants, what has been tried or answered, "
    "and what is still open. Do not address the customer."
)
SUGGEST_PROMPT = (
    "You draft a reply for a customer-support agent of {company}, who will edit it before "
    "sending. Answer the customer's latest message briefly and kindly, only from the help "
    "passages given; never invent policies, prices or steps."
)
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


def _complete(request: ReplyRequest) -> tuple[str, Finished | None]:
    # A grounded prompt tells the model to reply grounding.NO_ANSWER_MARKER when the passages
    # don't answer: that must never end up in a draft an agent could send.
    provider = grounding.AbstainOnMarker(llm.get_provider())
    text: list[str] = []
    finished: Finished | None = None
    for event in provider.stream(request):
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            finished = event
    return "".join(text).strip(), finished


def summary(conversation: Conversation) -> AssistResult:
    turns = _turns(conversation.pk)
    if llm.provider_name() == "offline" or not turns:
        return AssistResult("summary", extractive_summary(conversation, turns))
    from django.conf import settings

    request = ReplyRequest(
        messages=[
            ChatMessage("system", SUMMARY_PROMPT),
            ChatMessage("user", _transcript(turns)),
        ],
        model=settings.OPENAI_MODEL,
        temperature=0.2,
        max_tokens=settings.OPENAI_MAX_TOKENS,
    )
    text, _ = _complete(request)
    return AssistResult("summary", text or extractive_summary(conversation, turns))


def suggestion(conversation: Conversation) -> AssistResult:
    """A draft answer to the customer's latest message, grounded like the bot's replies."""
    from django.conf import settings

    from conversations.llm.offline import answer_from

    messages = [ChatMessage("system", SUGGEST_PROMPT.format(company=settings.COMPANY_NAME))]
    for turn in _turns(conversation.pk):
        if turn.author == Turn.Author.SYSTEM:
            continue
        text = grounding.strip_citations(turn.text)
        if turn.author == Turn.Author.CUSTOMER:
            messages.append(ChatMessage("user", text))
        else:
            messages.append(ChatMessage("assistant", text))
    if not any(m.role == "user" for m in messages):
        return AssistResult("suggest", "", notice="The customer hasn't asked anything yet.")
    request = grounded_request(messages)
    knowledge = request.knowledge
    if knowledge is not None and knowledge.abstain:
        return AssistResult("suggest", "", notice=NOTHING_FOUND)
    if llm.provider_name() == "offline" and knowledge is not None:
        # The same answer the bot would give, without the word-by-word pacing.
        answer = answer_from(knowledge)
        return AssistResult("suggest", answer.text, [s.as_dict() for s in answer.sources])
    text, finished = _complete(request)
    if finished is not None and finished.abstained:
        # The model found no answer in the passages: the bot's abstain words are no draft.
        return AssistResult("suggest", "", notice=NOTHING_FOUND)
    sources = reply_sources(finished, text, request) if finished else []
    return AssistResult("suggest", text, [s.as_dict() for s in sources])


def run(conversation_id: uuid.UUID | str, kind: str) -> AssistResult:
    conversation = Conversation.objects.get(pk=conversation_id)
    if kind == "summary":
        return summary(conversation)
    return suggestion(conversation)
