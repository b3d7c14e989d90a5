"""The model's own "the passages don't answer this": a model given passages replies
NO_ANSWER_MARKER and nothing else, and the bot then abstains exactly as when retrieval
finds nothing (the same words, abstained, no sources, counted by the abstain streak), while the
model's tokens are still recorded. The marker never reaches the customer, a frame or the
database, however the model's stream cuts it into chunks.

The model is the fake OpenAI-compatible server over real HTTP, told what to reply
(fake_llm.script: one SSE chunk a token), through the real openai client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from bot.guards import NO_ANSWER_MARKER, AbstainOnMarker
from bot.providers.base import Provider
from bot.types import ChatMessage, Finished, ReplyRequest, StreamEvent, TextDelta
from bot.wording import ENGLISH
from conversations import services as chat_services
from conversations.models import Conversation, Customer, EscalationRule, Turn
from studio import playground
from studio import services as studio_services
from studio.models import ModelPrice
from tests.bot import test_grounded_replies as grounded
from tests.bot.test_grounded_replies import (
    LANTERN_QUESTION,
    OFF_TOPIC_QUESTION,
    answered,
    done_frame,
    frames_of,
    passage_titles,
    system_prompt,
)

pytestmark = pytest.mark.django_db

model = grounded.model
kb = grounded.kb

MARKER = NO_ANSWER_MARKER
DOORBELL_QUESTION = "How do I reset the Quokka doorbell?"


def deltas_of(reply: Turn) -> list[str]:
    return [f["text"] for f in frames_of(reply) if f["type"] == "reply.delta"]


def assert_marker_never_shown(reply: Turn) -> None:
    """Not in any frame the writer published (live and replayed alike), nor stored."""
    for frame in frames_of(reply):
        assert "[[" not in json.dumps(frame) and "NO_ANSWER" not in json.dumps(frame).upper()
    assert "".join(deltas_of(reply)) == ENGLISH.abstain
    assert MARKER not in Turn.objects.get(pk=reply.pk).text


# --- A marker reply is an abstention ------------------------------------------------------------


def test_it_abstains_like_retrieval_does_when_the_model_replies_the_marker(model, kb):
    ModelPrice.objects.create(
        model="fake-model", input_per_million=Decimal("1"), output_per_million=Decimal("2")
    )
    model.script([MARKER])
    reply = answered(LANTERN_QUESTION)

    (request,) = model.requests()
    assert passage_titles(request) and MARKER in system_prompt(request)  # the model was asked
    assert (reply.status, reply.text, reply.abstained, reply.sources) == (
        "done",
        ENGLISH.abstain,
        True,
        [],
    )
    # The model's call is still accounted for.
    assert reply.provider == "openai" and reply.model == "fake-model"
    assert reply.prompt_tokens > 0 and reply.completion_tokens == 1
    assert reply.cost is not None and reply.cost > 0
    assert_marker_never_shown(reply)

    # reply.done is the one a retrieval abstention publishes, field for field.
    by_model = done_frame(reply)
    by_retrieval = done_frame(answered(OFF_TOPIC_QUESTION))
    assert len(model.requests()) == 1  # retrieval's abstention asked no model
    ignore = ("reply_id", "seq")
    assert {k: v for k, v in by_model.items() if k not in ignore} == {
        k: v for k, v in by_retrieval.items() if k not in ignore
    }
    assert (by_model["status"], by_model["text"], by_model["sources"]) == (
        "done",
        ENGLISH.abstain,
        [],
    )
    assert by_model["offers_handoff"] is True  # "Connect me" under it; a yes hands over


@pytest.mark.parametrize(
    "chunks",
    [
        ["[[NO_", "ANSWER]]"],
        ["\n", " [", "[NO", "_ANS", "WER", "]]", "\n"],
        list(MARKER),  # a character a chunk
        ["[[NO_ANSWER]]", " I'm sorry, the articles", " don't say."],  # what follows is dropped
        # As models also write it:
        ["[NO_ANSWER]"],
        ["NO_ANSWER"],
        ["[[no_answer]]"],
        ["\n ", "NO_", "ANSWER", ".\n"],
        ["[No_Answer]", " Sorry, the articles", " don't say."],
        ["NO_ANSWER", " - the passages", " don't say."],
        ["**NO_", "ANSWER**", " Sorry."],
        ["`NO_ANSWER`"],
    ],
    ids=[
        "two-pieces",
        "whitespace-around",
        "by-character",
        "trailing-text",
        "one-bracket",
        "no-brackets",
        "lower-case",
        "whitespace-and-period",
        "variant-then-text",
        "bare-then-text",
        "markdown-bold",
        "code",
    ],
)
def test_it_catches_the_marker_in_any_form_split_across_chunks_and_streams_none_of_it(
    model, kb, chunks
):
    model.script(chunks)
    reply = answered(LANTERN_QUESTION)

    assert model.requests()[0]["scripted"]
    assert (reply.status, reply.text, reply.abstained, reply.sources) == (
        "done",
        ENGLISH.abstain,
        True,
        [],
    )
    assert reply.completion_tokens == len(chunks)
    assert_marker_never_shown(reply)


def test_it_abstains_when_the_reply_stops_inside_the_marker(model, kb):
    model.script(["[[NO", "_ANS"])  # cut short, by max_tokens or a stop sequence
    reply = answered(LANTERN_QUESTION)

    assert (reply.text, reply.abstained, reply.sources) == (ENGLISH.abstain, True, [])
    assert_marker_never_shown(reply)


def test_it_streams_an_answer_that_starts_with_a_citation_with_its_sources(model, kb):
    chunks = ["[", "1", "] Plug", " the lantern into", " a USB port", " [2", "]."]
    model.script(chunks)
    reply = answered(LANTERN_QUESTION)

    (request,) = model.requests()
    assert MARKER in system_prompt(request)
    titles = passage_titles(request)
    assert reply.text == "".join(chunks) and not reply.abstained
    assert [(s["n"], s["title"]) for s in reply.sources] == [(1, titles[1]), (2, titles[2])]
    done = done_frame(reply)
    assert (done["text"], done["sources"]) == (reply.text, reply.sources)
    assert "".join(deltas_of(reply)) == reply.text


@pytest.mark.parametrize("marker", [["[[NO_", "ANSWER]]"], ["[[no_", "answer]]"]])
def test_it_cuts_a_marker_out_of_an_answer_it_follows(model, kb, marker):
    model.script(["Plug it in [1].", " " + marker[0], marker[1]])
    reply = answered(LANTERN_QUESTION)

    assert reply.text == "Plug it in [1]. " and not reply.abstained and reply.sources
    assert "NO_ANSWER" not in "".join(deltas_of(reply)).upper()


# --- The stream, chunk by chunk -----------------------------------------------------------------


class Chunks(Provider):
    """A model that says these chunks, counting how many it was asked for."""

    def __init__(self, *chunks: str) -> None:
        self.chunks = chunks
        self.sent = 0

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        for chunk in self.chunks:
            self.sent += 1
            yield TextDelta(chunk)
        yield Finished(model="m", prompt_tokens=7, completion_tokens=len(self.chunks))


def relayed(provider: Provider) -> Iterator[StreamEvent]:
    return AbstainOnMarker(provider).stream(ReplyRequest(messages=[]))


@pytest.mark.parametrize(
    ("chunks", "first", "read"),
    [
        (["[1", "] Plug it in."], "[1", 1),  # "[1" can't be the marker
        (["[", "1]", " Plug it in."], "[1]", 2),
        (["Plug", " it in."], "Plug", 1),
        (["\n", "[[NO", "PE", " really"], "\n[[NOPE", 3),
        # Could be a bare marker until the next token says otherwise.
        (["No", " problem", " at all."], "No problem", 2),
        (["NO_ANSWER", "_TIMEOUT means", " no signal [1]."], "NO_ANSWER_TIMEOUT means", 2),
        (["**Yes**", ", plug it in."], "**Yes**", 1),  # bold, but not the marker
        # A list item could be "*NO_ANSWER*" until its next token says otherwise.
        (["*", " Plug it in.", "\n* Wait."], "* Plug it in.", 2),
    ],
)
def test_it_lets_an_answer_flow_as_soon_as_it_cannot_be_the_marker(chunks, first, read):
    provider = Chunks(*chunks)
    stream = relayed(provider)

    assert next(stream) == TextDelta(first)
    assert provider.sent == read  # nothing was waited for beyond that
    events = list(stream)
    text = first + "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "".join(chunks)
    assert events[-1] == Finished(model="m", prompt_tokens=7, completion_tokens=len(chunks))


def test_it_tells_a_bare_marker_cut_short_from_a_one_word_answer():
    cut_short = list(relayed(Chunks("NO_", "ANS")))
    assert "".join(e.text for e in cut_short if isinstance(e, TextDelta)) == ENGLISH.abstain
    assert cut_short[-1].abstained

    answer = list(relayed(Chunks("No")))
    assert answer == [
        TextDelta("No"),
        Finished(model="m", prompt_tokens=7, completion_tokens=1),
    ]


def test_it_keeps_the_models_usage_on_an_abstention_and_reads_its_stream_to_the_end():
    provider = Chunks(" [[NO_", "ANSWER]] Sorry", ", nothing", " here.")
    events = list(relayed(provider))

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ENGLISH.abstain
    assert events[-1] == Finished(model="m", prompt_tokens=7, completion_tokens=4, abstained=True)
    assert provider.sent == 4


# --- The abstain streak -------------------------------------------------------------------------


@pytest.fixture
def abstain_streak(db) -> None:
    EscalationRule.objects.filter(kind=EscalationRule.Kind.ABSTAIN_STREAK).delete()
    EscalationRule.objects.create(kind=EscalationRule.Kind.ABSTAIN_STREAK, threshold=2)


def test_it_hands_over_after_the_model_could_not_answer_twice_in_a_row(model, kb, abstain_streak):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    model.script([MARKER], ["[[NO_", "ANSWER]]"])

    first = answered(LANTERN_QUESTION, conversation)
    assert first.abstained
    conversation.refresh_from_db()
    assert conversation.status == "open"

    second = answered(DOORBELL_QUESTION, conversation)
    assert second.abstained and len(model.requests()) == 2
    conversation.refresh_from_db()
    assert (conversation.status, conversation.escalation_reason) == ("pending", "abstained")
    notices = conversation.turns.filter(author="system").values_list("text", flat=True)
    assert list(notices) == [ENGLISH.person_will_join]


def test_it_counts_a_model_abstention_and_a_retrieval_abstention_in_one_streak(
    model, kb, abstain_streak
):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    model.script([MARKER])

    assert answered(OFF_TOPIC_QUESTION, conversation).abstained  # retrieval's
    assert answered(LANTERN_QUESTION, conversation).abstained  # the model's
    conversation.refresh_from_db()
    assert (conversation.status, conversation.escalation_reason) == ("pending", "abstained")


# --- The playground -----------------------------------------------------------------------------


def test_it_shows_the_operator_that_the_model_abstained_without_the_marker(model, kb):
    version = studio_services.create_draft(by=None, name="Try-out")
    model.script(["[[NO_", "ANSWER]]"])
    shown: list[str] = []

    result = playground.answer(version, [ChatMessage("user", LANTERN_QUESTION)], shown.append)

    assert (result.text, result.abstained, result.sources) == (ENGLISH.abstain, True, [])
    assert "".join(shown) == ENGLISH.abstain
    frame = result.usage_frame()
    assert frame["abstained_by"] == "model" and frame["model"] == "fake-model"
    assert frame["completion_tokens"] == 2 and frame["prompt_tokens"] > 0
    assert "NO_ANSWER" not in json.dumps(frame["text"])

    by_retrieval = playground.answer(version, [ChatMessage("user", OFF_TOPIC_QUESTION)])
    assert by_retrieval.usage_frame()["abstained_by"] == "retrieval"
    answer = playground.answer(version, [ChatMessage("user", LANTERN_QUESTION)])
    assert answer.usage_frame()["abstained_by"] is None and answer.sources


# --- The agent's suggested reply --------------------------------------------------------------


def test_it_suggests_no_draft_to_the_agent_when_the_model_abstains(model, kb):
    from inbox import assist

    conversation = Conversation.objects.create(customer=Customer.objects.create())
    chat_services.post_customer_message(conversation, "c-1", LANTERN_QUESTION)
    model.script(["[[NO_", "ANSWER]]"])

    suggestion = assist.suggestion(conversation)

    assert (suggestion.text, suggestion.sources) == ("", [])
    assert suggestion.notice == assist.NOTHING_FOUND
    assert model.requests()[0]["scripted"]
    # An answer still becomes a draft with its sources.
    drafted = assist.suggestion(conversation)
    assert drafted.text and drafted.sources and not drafted.notice


# --- eval_kb --answerer model -------------------------------------------------------------------


@pytest.fixture
def question_set(tmp_path, kb):
    # The lantern articles mention the battery but, say, not this: a near miss retrieval lets
    # through, which only the model can tell.
    rows = [
        {"question": LANTERN_QUESTION, "expected": "none", "kind": "near_miss"},
        {"question": DOORBELL_QUESTION, "expected": "quokka-doorbell"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def eval_kb(*args: str) -> dict:
    out = StringIO()
    call_command("eval_kb", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_it_counts_the_models_marker_replies_as_abstentions_in_eval_kb(model, question_set):
    model.script([MARKER])  # the first question asked of the model: the near miss
    figures = eval_kb(str(question_set), "--answerer", "model")

    assert len(model.requests()) == 2 and model.requests()[0]["scripted"]
    assert figures["answerer"] == "model"
    assert figures["abstention_recall"] == 1.0 and figures["abstention_precision"] == 1.0
    assert figures["answered_correctly"] == 1.0
    assert figures["by_kind"]["near_miss"]["abstention_recall"] == 1.0

    out = StringIO()
    model.script([MARKER])
    call_command("eval_kb", str(question_set), "--answerer", "model", "--misses", stdout=out)
    assert "answered by the model" in out.getvalue()


def test_it_still_evaluates_the_offline_answerer_by_default(model, question_set):
    figures = eval_kb(str(question_set))

    assert model.requests() == []  # a model is configured, but not asked
    assert figures["answerer"] == "offline"
    assert figures["abstention_recall"] == 0.0  # the offline answerer answers the near miss


def test_it_refuses_the_model_answerer_when_no_model_is_configured(settings, question_set):
    settings.LLM_PROVIDER = "offline"
    with pytest.raises(CommandError, match="needs a model"):
        call_command("eval_kb", str(question_set), "--answerer", "model", stdout=StringIO())
