"""The prompt: the one place a request to a provider is built, for every caller (customer
replies, the playground, evaluations, eval_kb, agent assist's suggestion and summary).

`build_request(config, messages)` takes a conversation's messages (without a system message:
the prompt version brings its own) and returns the request a provider answers:

- the version's system prompt, rendered. Templates know four variables: {company}
  (COMPANY_NAME), {language} (the language the customer writes in, bot.wording.
  customer_language: "English", "German", ... or the words "the customer's language" when
  their messages don't tell),
  {customer_name} (the customer's display name, or "the customer") and {passages} (the
  knowledge block: the rules and the numbered passages; appended after the prompt when the
  template has no {passages}). Only these exact placeholders are replaced; any other braces
  in an operator's text stay as written;
- the history within the version's budget: the newest messages that fit `history_tokens`
  (estimated) and CHAT_HISTORY_TURNS; when older ones don't fit, they are replaced by one
  extractive line ("Earlier in this conversation, the customer asked about: ...") capped at
  SUMMARY_MAX_TOKENS, which counts towards the same budget. So the prompt stops growing once a
  conversation is longer than its budget;
- what the knowledge base has for the latest message (bot/grounding.py), as numbered passages
  with the rules for using them (answer only from them, cite them as [1], reply with nothing
  but NO_ANSWER_MARKER when they don't answer, never invent, answer in the customer's
  language).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.conf import settings

from bot import grounding
from bot.config import BotConfig
from bot.grounding import passage_header
from bot.guards import NO_ANSWER_MARKER
from bot.providers import registry
from bot.providers.base import Provider
from bot.types import (
    ChatMessage,
    Knowledge,
    KnowledgePassage,
    ReplyRequest,
    estimate_tokens,
)
from knowledge.language import detect_language, language_name

SUMMARY_MAX_TOKENS = 120
# Older turns read (beyond those sent verbatim) to summarise: one bounded query whatever the
# conversation's length.
SUMMARY_SCAN_TURNS = 30
SUMMARY_WORDS_PER_QUESTION = 14
SUMMARY_LEAD = "Earlier in this conversation, the customer asked about: "
UNKNOWN_LANGUAGE = "the customer's language"


def build_request(
    config: BotConfig,
    messages: Sequence[ChatMessage],
    *,
    customer_name: str = "",
    provider: Provider | None = None,
) -> ReplyRequest:
    """The request the bot sends with this configuration for a conversation's messages (oldest
    first, without a system message): rendered system prompt, history within the budget,
    passages for the latest message (see the module doc). `provider`: who will answer it
    (default: the configuration's), which sets how sure retrieval must be of a passage
    (grounding.min_confidence)."""
    answered_by = provider or registry.for_config(config)
    kept, summary = fit_history(messages, config.history_tokens)
    knowledge = grounding.ground(
        kept,
        budget=config.knowledge_tokens,
        threshold=grounding.min_confidence(answered_by.judges_passages),
    )
    system = render_system_prompt(
        config.system_prompt,
        language=language_name(knowledge.language) or UNKNOWN_LANGUAGE,
        customer_name=customer_name,
    )
    if summary:
        system = f"{system}\n\n{summary}"
    prompt = [ChatMessage("system", system), *kept]
    return ReplyRequest(
        messages=with_knowledge(prompt, knowledge),
        model=config.request_model,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        stop=list(config.stop),
        knowledge=knowledge,
        limits=config.model_limits,
    )


ASSIST_SUMMARY_RULES = (
    "Now you are not talking to the customer: you help a colleague from the support team who "
    "takes over this conversation. Summarise it for them in at most five short bullet points. "
    "Start with the customer's latest open problem (given below) and what, if anything, has "
    "been answered or tried for it; then, briefly, the earlier topics. Do not address the "
    "customer and do not invent anything that is not in the conversation. Write in English, "
    "whatever language the customer writes in."
)
# The team's language (the inbox is in English), not the customer's: the summary is for them.
ASSIST_LANGUAGE = "English"


def assist_summary_request(
    config: BotConfig,
    transcript: str,
    *,
    latest_problem: str,
    earlier_topics: Sequence[str] = (),
    customer_name: str = "",
) -> ReplyRequest:
    """A request for a summary for an agent (agent assist, bot/assist.py), made with this
    configuration as a reply is: its system prompt (rendered, without passages) followed by
    the summary rules, its model, temperature, top_p, stop, length and rate limits. The user
    message names the latest open problem first, then the earlier topics, then the transcript
    (the whole conversation within the budget, bot.assist.transcript)."""
    system = render_system_prompt(
        config.system_prompt.replace(PASSAGES_PLACEHOLDER, ""),
        language=ASSIST_LANGUAGE,
        customer_name=customer_name,
    ).strip()
    parts = [f"The customer's latest open problem: {latest_problem or 'none (nothing open)'}"]
    if earlier_topics:
        parts.append(
            "Earlier topics, newest first:\n" + "\n".join(f"- {t}" for t in earlier_topics)
        )
    parts.append(f"The conversation, oldest first:\n{transcript}")
    return ReplyRequest(
        messages=[
            ChatMessage("system", f"{system}\n\n{ASSIST_SUMMARY_RULES}".strip()),
            ChatMessage("user", "\n\n".join(parts)),
        ],
        model=config.request_model,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        stop=list(config.stop),
        limits=config.model_limits,
    )


# --- The system prompt -----------------------------------------------------------------------

_VARIABLE = re.compile(r"\{(company|language|customer_name)\}")


def render_system_prompt(
    template: str, *, language: str = UNKNOWN_LANGUAGE, customer_name: str = ""
) -> str:
    """The template with {company}, {language} and {customer_name} filled in; {passages} stays
    for with_knowledge. Any other braces are left exactly as written."""
    values = {
        "company": str(settings.COMPANY_NAME),
        "language": language,
        # No braces from a customer's name can become a placeholder.
        "customer_name": re.sub(r"[{}]", "", customer_name).strip() or "the customer",
    }
    return _VARIABLE.sub(lambda m: values[m.group(1)], template)


def uses_variable(template: str, name: str) -> bool:
    return "{" + name + "}" in template


def guess_language(text: str) -> str:
    """The English name of the language a message is written in ("German"), or the words
    "the customer's language" when unsure (knowledge.language.detect_language: a short
    message such as "ok" or "hi", a language it doesn't name): never a reason to fail."""
    return language_name(detect_language(text)) or UNKNOWN_LANGUAGE


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


# --- The knowledge block ----------------------------------------------------------------------

# The rules that go with the passages. "{last}" is the highest passage number.
KNOWLEDGE_INSTRUCTIONS = (
    "Passages from our help articles that may answer the customer's latest message follow, "
    "numbered [1] to [{last}].\n"
    "- Answer only from these passages. Add nothing that is not in them.\n"
    "- Cite each passage you use by its number in square brackets, such as [1] or [2], right "
    "after the sentence that uses it.\n"
    f"- If the passages don't contain the answer, reply with exactly {NO_ANSWER_MARKER} and "
    "nothing else: no apology and no guess (we then tell the customer and offer a person from "
    "our team).\n"
    "- Never invent policies, prices, dates, links or steps.\n"
    "- Answer in the language the customer writes in."
)
PASSAGES_HEADING = "Passages:"
# Without passages (small talk, or nothing to look up) the model still must not make things up.
NO_PASSAGES_NOTE = (
    "No help-article passages go with the customer's latest message. Don't state any policies, "
    "prices or steps; if the customer needs information, ask what they need or offer to "
    "connect them with a person from our team."
)


def passages_section(passages: Sequence[KnowledgePassage]) -> str:
    """The numbered passages as the prompt shows them."""
    return "\n\n".join(
        f"{passage_header(passage.n, passage.title, passage.heading)}\n{passage.text}"
        for passage in passages
    )


def knowledge_block(knowledge: Knowledge) -> str:
    """What goes at the end of the system prompt for this reply ("" when abstaining: no model
    sees the request then)."""
    if knowledge.abstain:
        return ""
    if not knowledge.passages:
        return NO_PASSAGES_NOTE
    instructions = KNOWLEDGE_INSTRUCTIONS.format(last=knowledge.passages[-1].n)
    return f"{instructions}\n\n{PASSAGES_HEADING}\n\n{passages_section(knowledge.passages)}"


PASSAGES_PLACEHOLDER = "{passages}"


def with_knowledge(messages: Sequence[ChatMessage], knowledge: Knowledge) -> list[ChatMessage]:
    """The messages with the knowledge block in the system prompt: where its template says
    {passages}, else appended."""
    block = knowledge_block(knowledge)
    result = list(messages)
    if result and result[0].role == "system" and PASSAGES_PLACEHOLDER in result[0].content:
        content = result[0].content.replace(PASSAGES_PLACEHOLDER, block).strip()
        result[0] = ChatMessage("system", content)
        return result
    if not block:
        return result
    if result and result[0].role == "system":
        result[0] = ChatMessage("system", f"{result[0].content}\n\n{block}")
    else:
        result.insert(0, ChatMessage("system", block))
    return result
