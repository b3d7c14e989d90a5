"""The offline answerer: answers copied from the help articles, streamed word by word, with the
article as its source; small talk without sources; "I don't know" instead of a guess.

Called directly, the provider grounds the request itself (conversations/grounding.py); the
reply writer hands it grounded requests (tests/test_grounded_replies.py)."""

from __future__ import annotations

import re
import time

import pytest
from django.db import DatabaseError

from bot.providers.offline import HEDGE_MARGIN, OfflineProvider, answer_from, extract_answer, plain
from bot.providers.registry import get_provider
from bot.types import (
    ChatMessage,
    Finished,
    Knowledge,
    KnowledgePassage,
    ProviderError,
    ReplyRequest,
    Source,
    TextDelta,
    estimate_tokens,
)
from bot.wording import ENGLISH
from knowledge.models import Article
from knowledge.search import Hit, search
from knowledge.services import DEMO_DIR, load_markdown_folder
from tests.fixtures_kb import indexed_article
from tests.knowledge.test_retrieval import OFF_TOPIC, QUESTIONS


@pytest.fixture
def demo_kb(db: None) -> dict[str, Article]:
    load_markdown_folder(DEMO_DIR)
    return {article.slug: article for article in Article.objects.all()}


def ask(question: str, *history: ChatMessage, provider: OfflineProvider | None = None):
    """Run the provider on a question; returns (deltas, finished)."""
    messages = [ChatMessage("system", "You are the assistant."), *history]
    messages.append(ChatMessage("user", question))
    events = list((provider or OfflineProvider()).stream(ReplyRequest(messages=messages)))
    assert isinstance(events[-1], Finished)
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    return [event.text for event in events[:-1]], events[-1]


def body_of(answer: str) -> list[str]:
    """The lines of an answer that come from the article (lead-in and pointers removed)."""
    lines = answer.split("\n")
    assert lines[0] in (*ENGLISH.lead_ins, *ENGLISH.step_lead_ins, ENGLISH.hedged_lead_in)
    assert lines[-1].startswith("You can read more in “")
    return [re.sub(r"^(?:\d+\.|-) ", "", line) for line in lines[2:-2] if line]


def pointers_match(text: str, sources: list[Source]) -> bool:
    """The answer points to its first source, and to the second (if any) as a "see also"."""
    closing = text.split("\n")[-1]
    expected = ENGLISH.pointer.format(title=sources[0].title)
    if len(sources) == 2:
        expected += " " + ENGLISH.see_also.format(title=sources[1].title)
    return len(sources) <= 2 and closing.startswith(expected)


def test_it_streams_the_answer_word_by_word_then_finishes_once_with_the_source(demo_kb):
    deltas, finished = ask("How do I return an item?")
    text = "".join(deltas)

    assert len(deltas) > 20
    assert all(re.fullmatch(r"\s*\S+", delta) for delta in deltas)
    assert not deltas[0][0].isspace() and all(d[0].isspace() for d in deltas[1:])
    returns = demo_kb["returns"]
    assert finished.sources[0] == Source(returns.title, returns.url, returns.pk, n=1)
    assert finished.model == "offline-bm25"
    assert finished.abstained is False
    assert finished.completion_tokens == estimate_tokens(text)
    assert finished.prompt_tokens > estimate_tokens("How do I return an item?")
    assert "Return items" in text
    assert pointers_match(text, finished.sources)


def test_it_waits_between_words_so_the_reply_appears_gradually(demo_kb, settings):
    settings.OFFLINE_WORD_DELAY_MS = 10
    search("password", 1)  # the index is built before the clock starts
    provider = OfflineProvider()
    stream = provider.stream(ReplyRequest([ChatMessage("user", "How do I reset my password?")]))
    started = time.monotonic()
    first = next(stream)
    first_at = time.monotonic() - started
    rest = list(stream)
    total = time.monotonic() - started

    assert isinstance(first, TextDelta)
    words = 1 + sum(isinstance(event, TextDelta) for event in rest)
    assert total >= (words - 1) * 0.010
    assert first_at < total / 4  # the first word doesn't wait for the rest


@pytest.mark.parametrize(("question", "slug"), QUESTIONS)
def test_it_answers_only_with_sentences_from_the_article_it_cites(demo_kb, question, slug):
    deltas, finished = ask(question)
    article = demo_kb[slug]
    assert finished.sources[0] == Source(article.title, article.url, article.pk, n=1)
    assert pointers_match("".join(deltas), finished.sources)
    lines = body_of("".join(deltas))
    assert lines
    source_text = plain(" ".join(article.body.split()))
    for line in lines:
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            assert sentence in source_text, sentence
    assert sum(len(line.split()) for line in lines) < 160  # an answer, not the whole article


def test_it_keeps_steps_together_and_in_order(demo_kb):
    deltas, _ = ask("how do I start a return")
    text = "".join(deltas)
    steps = re.findall(r"^(\d)\. ", text, re.M)
    assert steps == ["1", "2", "3", "4", "5"]
    assert "Return items" in text and "**" not in text


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_it_says_it_does_not_know_and_offers_a_person_instead_of_guessing(demo_kb, question):
    deltas, finished = ask(question)
    assert "".join(deltas) == ENGLISH.abstain
    assert finished.abstained is True
    assert finished.sources == []
    assert finished.completion_tokens == estimate_tokens(ENGLISH.abstain)


@pytest.mark.django_db
def test_it_says_it_does_not_know_when_the_knowledge_base_is_empty():
    deltas, finished = ask("How do I return an item?")
    assert "".join(deltas) == ENGLISH.abstain and finished.abstained


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("hi", "How can I help you today?"),
        ("Hello there!", "How can I help you today?"),
        ("good morning", "How can I help you today?"),
        ("thanks!", "You're welcome!"),
        ("Thank you so much 🙏", "You're welcome!"),
        ("ok thanks, bye", "have a great day"),
        ("bye", "Have a great day!"),
        ("are you a bot?", "virtual assistant"),
    ],
)
def test_it_answers_small_talk_briefly_without_searching_or_sources(message, expected):
    def no_search(query: str, k: int) -> list:
        raise AssertionError("small talk must not search")

    deltas, finished = ask(message, provider=OfflineProvider(search=no_search))
    text = "".join(deltas)
    assert expected in text and len(text.split()) < 40
    assert finished.sources == [] and finished.abstained is False


def test_a_greeting_with_a_question_gets_an_answer(demo_kb):
    deltas, finished = ask("Hi! How do I reset my password?")
    assert finished.sources[0].title == "How do I reset my password?"


@pytest.mark.parametrize("message", ["", "   ", "???", "can you help me?"])
def test_it_asks_what_the_customer_needs_when_there_is_no_question(demo_kb, message):
    deltas, finished = ask(message)
    assert "".join(deltas) == ENGLISH.ask_for_detail
    assert finished.sources == [] and not finished.abstained


def test_it_answers_the_latest_question_of_the_conversation(demo_kb):
    history = [
        ChatMessage("user", "How do I return an item?"),
        ChatMessage("assistant", "You can return any product within 30 days."),
    ]
    deltas, finished = ask("do you accept american express?", *history)
    assert finished.sources[0].url.endswith("/payment-methods")
    assert "American Express" in "".join(deltas)


def test_it_hedges_a_weaker_match_and_offers_a_person(demo_kb, settings):
    question = "I want to send back the bulb I bought"
    # Just above the threshold, whatever retrieval's exact confidence for it is.
    settings.KB_MIN_CONFIDENCE = search(question, 1)[0].confidence - HEDGE_MARGIN / 2
    deltas, finished = ask(question)
    text = "".join(deltas)
    assert text.startswith(ENGLISH.hedged_lead_in) and text.endswith(ENGLISH.hedged_closing)
    assert finished.sources and not finished.abstained


def test_it_follows_the_threshold_setting(demo_kb, settings):
    settings.KB_MIN_CONFIDENCE = 1.01
    _, finished = ask("How do I return an item?")
    assert finished.abstained

    settings.KB_MIN_CONFIDENCE = 0.0
    _, finished = ask("what's the capital of France")
    assert not finished.abstained and finished.sources


def test_html_in_an_article_does_not_break_the_answer(demo_kb):
    article = indexed_article(
        slug="gift-wrapping",
        title="Do you offer gift wrapping?",
        url="https://help.brightwave.example/gift-wrapping",
        body=(
            "<div class='note'>Gift wrapping is <b>free</b> for every order.</div>\n\n"
            "<script>alert('x')</script>\n\n"
            "Choose **Gift wrap** at checkout & add a message of up to 200 characters.\n"
        ),
    )
    deltas, finished = ask("is gift wrapping free?")
    text = "".join(deltas)
    assert finished.sources[0] == Source(article.title, article.url, article.pk, n=1)
    assert "Gift wrapping is free for every order." in text
    assert "<b>" not in text


def test_html_in_a_question_does_not_break_the_answer(demo_kb):
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
    deltas, finished = ask(payload)
    assert "".join(deltas) and isinstance(finished, Finished)


def test_a_database_failure_is_a_retryable_provider_error():
    def broken(query: str, k: int) -> list:
        raise DatabaseError("connection lost")

    with pytest.raises(ProviderError) as raised:
        ask("How do I return an item?", provider=OfflineProvider(search=broken))
    assert raised.value.permanent is False
    assert raised.value.code == "knowledge_unavailable"


def test_the_offline_provider_is_what_the_bot_uses_without_a_model(settings):
    settings.LLM_PROVIDER = "auto"
    settings.OPENAI_API_KEY = ""
    provider = get_provider()
    assert isinstance(provider, OfflineProvider) and provider.name == "offline"


def test_a_list_is_kept_whole_with_the_sentence_that_introduces_it():
    markdown = (
        "Some background that is not relevant here.\n\n"
        "To reset the plug, follow these steps:\n\n"
        "1. Hold the button.\n"
        "2. Wait for the light.\n"
        "3. Add the plug again.\n\n"
        "Unrelated closing remark about invoices."
    )
    from knowledge.search.lexical import BM25Index
    from knowledge.search.text import Passage

    index = BM25Index([Passage(1, "Plugs", "", markdown)])
    terms = index.search("how do I reset the plug", 1)[0].query_terms
    assert extract_answer(markdown, terms) == (
        "To reset the plug, follow these steps:\n"
        "1. Hold the button.\n"
        "2. Wait for the light.\n"
        "3. Add the plug again."
    )


# --- Answers from the passages grounding found -------------------------------------------------


def hit(article_id: int, title: str, text: str, *, score: float, confidence: float) -> Hit:
    return Hit(
        article_id=article_id,
        title=title,
        url=f"https://help.example.com/{article_id}",
        text=text,
        score=score,
        confidence=confidence,
    )


def grounded(*hits: Hit, threshold: float = 0.5, question: str = "?") -> Knowledge:
    passages = tuple(
        KnowledgePassage(
            n=n,
            article_id=h.article_id,
            title=h.title,
            url=h.url,
            text=h.text,
            confidence=h.confidence,
            hit=h,
        )
        for n, h in enumerate(hits, start=1)
    )
    return Knowledge(question=question, passages=passages, threshold=threshold)


LANTERN = (
    "To recharge the Zephyr lantern, plug its cable into any USB port. It glows green when full."
)
DOORBELL = "The Quokka doorbell runs on two AA batteries. Replace them once a year."
STEPS = "1. Hold the reset button.\n2. Wait for the blue light.\n3. Add the doorbell again."


def test_it_answers_from_the_passages_it_is_given_without_searching_again():
    def no_search(query: str, k: int) -> list:
        raise AssertionError("a grounded request must not be searched again")

    knowledge = grounded(hit(7, "Zephyr lantern", LANTERN, score=3.0, confidence=0.9))
    request = ReplyRequest([ChatMessage("user", "how do I charge it?")], knowledge=knowledge)
    events = list(OfflineProvider(search=no_search).stream(request))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))

    assert "plug its cable into any USB port" in text
    assert events[-1].sources == [Source("Zephyr lantern", "https://help.example.com/7", 7, n=1)]
    assert text.split("\n")[-1] == ENGLISH.pointer.format(title="Zephyr lantern")


def test_it_points_to_a_second_article_that_matches_nearly_as_well():
    lantern = hit(7, "Zephyr lantern", LANTERN, score=3.0, confidence=0.9)
    close = hit(8, "Quokka doorbell", DOORBELL, score=2.7, confidence=0.85)
    far = hit(8, "Quokka doorbell", DOORBELL, score=1.0, confidence=0.85)

    reply = answer_from(grounded(lantern, close))
    assert reply.text.endswith(ENGLISH.see_also.format(title="Quokka doorbell"))
    assert [(s.n, s.article_id) for s in reply.sources] == [(1, 7), (2, 8)]
    assert "AA batteries" not in reply.text  # a pointer, not a second answer

    reply = answer_from(grounded(lantern, far))
    assert "Quokka" not in reply.text and [s.n for s in reply.sources] == [1]


def test_it_introduces_steps_as_steps():
    reply = answer_from(grounded(hit(8, "Resetting the doorbell", STEPS, score=2, confidence=0.9)))
    lead_in, body, closing = reply.text.split("\n\n")
    assert lead_in in ENGLISH.step_lead_ins
    assert body == STEPS
    assert closing == ENGLISH.pointer.format(title="Resetting the doorbell")


def test_it_says_what_grounding_decided_when_there_is_nothing_to_answer_from():
    assert answer_from(Knowledge(question="x", abstain=True)).text == ENGLISH.abstain
    assert answer_from(Knowledge(question="x", abstain=True)).abstained
    assert answer_from(Knowledge(question="can you help me?")).text == ENGLISH.ask_for_detail
    thanks = answer_from(Knowledge(question="thanks", small_talk=frozenset({"thanks"})))
    assert "You're welcome" in thanks.text and not thanks.sources


# --- Tables --------------------------------------------------------------------------------------

ERROR_TABLE = (
    "Look the code up below.\n\n"
    "| Code | What it means | What to do |\n"
    "|---|---|---|\n"
    "| E05 | The battery is too cold. | Let it warm up indoors. |\n"
    "| E06 | The motor sensor lost contact. | Check the sensor cable plug. |\n"
    "| E07 | The display firmware is outdated. | Update it in the app. |\n"
)


def terms_for(markdown: str, question: str):
    from knowledge.search.lexical import BM25Index
    from knowledge.search.text import Passage

    return BM25Index([Passage(1, "Error codes", "", markdown)]).search(question, 1)[0].query_terms


def test_it_quotes_the_table_row_that_answers_under_its_header():
    answer = extract_answer(ERROR_TABLE, terms_for(ERROR_TABLE, "What does E06 mean?"))
    assert answer == (
        "- Code: E06\n"
        "- What it means: The motor sensor lost contact.\n"
        "- What to do: Check the sensor cable plug."
    )


def test_several_rows_that_answer_come_as_a_small_table_with_the_header():
    question = "what do E05 and E07 mean"
    answer = extract_answer(ERROR_TABLE, terms_for(ERROR_TABLE, question), question=question)
    assert answer == (
        "| Code | What it means | What to do |\n"
        "|---|---|---|\n"
        "| E05 | The battery is too cold. | Let it warm up indoors. |\n"
        "| E07 | The display firmware is outdated. | Update it in the app. |"
    )


def test_a_table_is_never_quoted_as_a_raw_fragment():
    question = "what to do about the sensor cable"
    answer = extract_answer(ERROR_TABLE, terms_for(ERROR_TABLE, question), question=question)
    assert "|---" not in answer and "E06" in answer
    assert "E05" not in answer and "E07" not in answer


def test_a_sentence_beside_a_table_is_chosen_over_rows_that_only_share_the_header():
    markdown = (
        "| Plan | Monthly |\n|---|---|\n| Basic | €9 |\n| Plus | €15 |\n\n"
        "Pay yearly and you only pay for 10 months."
    )
    question = "can I pay yearly"
    answer = extract_answer(markdown, terms_for(markdown, question), question=question)
    assert answer == "Pay yearly and you only pay for 10 months."
