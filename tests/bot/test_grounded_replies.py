"""Grounded answers: the knowledge base's passages go into the model's prompt, numbered, within a
token budget; the [n] citations of the answer come back as its sources, in the reply.done frame
and on the stored turn; with nothing good enough the bot says so and offers a person without
asking any model. The model is the fake OpenAI-compatible server over real HTTP, through the
real openai client.

The articles are about made-up products (the Zephyr lantern, the Quokka doorbell), so which
article answers a question doesn't depend on the retrieval's details; where a test needs to
know which passage was [1], it reads the prompt that was actually sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from django.db import DatabaseError

from bot.evaluation import answer_question
from bot.grounding import cited_sources, cut_to_fit, ground, number_passages
from bot.guards import NO_ANSWER_MARKER
from bot.prompt import (
    KNOWLEDGE_INSTRUCTIONS,
    NO_PASSAGES_NOTE,
    PASSAGES_HEADING,
    passages_section,
    with_knowledge,
)
from bot.providers import registry
from bot.providers.base import Provider
from bot.types import (
    ChatMessage,
    Finished,
    ReplyRequest,
    Source,
    StreamEvent,
    TextDelta,
    estimate_tokens,
)
from bot.wording import ENGLISH
from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from knowledge import search as knowledge_search
from knowledge.indexing import sync_passages
from knowledge.models import Article
from knowledge.search import Hit
from support_bot.redis_clients import key, sync_client
from tests.conftest import reply_text
from tests.fake_llm import expected_reply
from tests.fixtures_fake_llm import answer_with_fake_model
from tests.fixtures_kb import indexed_article

pytestmark = pytest.mark.django_db

LANTERN_QUESTION = "How do I recharge the Zephyr lantern battery?"
OFF_TOPIC_QUESTION = "What is the capital of France?"


@pytest.fixture
def model(settings, fake_llm):
    """Point the bot at the fake OpenAI-compatible server through the real openai client."""
    return answer_with_fake_model(settings, fake_llm)


@pytest.fixture
def kb(db) -> dict[str, Article]:
    articles = [
        Article(
            slug="lantern-charging",
            title="Recharging the Zephyr lantern",
            url="https://help.example.com/zephyr-lantern",
            body=(
                "To recharge the Zephyr lantern, plug its magnetic cable into any USB port. "
                "The ring glows amber while the lantern charges and turns green when the "
                "battery is full."
            ),
        ),
        Article(
            slug="lantern-battery",
            title="Zephyr lantern battery care",
            url="",  # an article without a link
            body=(
                "Store the Zephyr lantern with a half-full battery when you put it away. "
                "Recharge the battery every three months so that it stays healthy."
            ),
        ),
        Article(
            slug="quokka-doorbell",
            title="Resetting the Quokka doorbell",
            url="https://help.example.com/quokka-doorbell",
            body="To reset the Quokka doorbell, hold its reset button until the light blinks blue.",
        ),
    ]
    for article in articles:
        article.save()
    sync_passages()
    return {article.slug: article for article in articles}


def ask(text: str, conversation: Conversation | None = None) -> Turn:
    conversation = conversation or Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None
    return posted.reply


def answered(text: str, conversation: Conversation | None = None) -> Turn:
    reply = ask(text, conversation)
    write_reply(reply.pk)
    reply.refresh_from_db()
    return reply


def frames_of(reply: Turn) -> list[dict]:
    return [json.loads(f["f"]) for _id, f in sync_client().xrange(key("reply", reply.pk))]


def done_frame(reply: Turn) -> dict:
    frame = frames_of(reply)[-1]
    assert frame["type"] == "reply.done"
    return frame


def system_prompt(request: dict) -> str:
    messages = request["body"]["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


def passage_titles(request: dict) -> dict[int, str]:
    """{n: title} of the passages the prompt offered."""
    headers = re.findall(r"^\[(\d+)\] (.+)$", system_prompt(request), re.M)
    return {int(n): title.split(" — ")[0] for n, title in headers}


def offered_passages(request: dict) -> str:
    return system_prompt(request).split(f"\n{PASSAGES_HEADING}\n\n", 1)[1]


def as_source(article: Article, n: int) -> dict:
    return {"n": n, "title": article.title, "url": article.url, "article_id": article.pk}


class Scripted(Provider):
    """A model that always says the same text, for what the fake server never says."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[ReplyRequest] = []

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        self.requests.append(request)
        yield TextDelta(self.text)
        yield Finished(model="scripted", prompt_tokens=10, completion_tokens=10)


@pytest.fixture
def scripted(settings, monkeypatch):
    settings.LLM_PROVIDER = "openai"

    def install(text: str) -> Scripted:
        provider = Scripted(text)
        monkeypatch.setattr(registry, "get_provider", lambda: provider)
        return provider

    return install


# --- The prompt ------------------------------------------------------------------------------


def test_it_puts_the_numbered_passages_and_the_rules_into_the_models_prompt(model, kb, settings):
    answered(LANTERN_QUESTION)

    (request,) = model.requests()
    prompt = system_prompt(request)
    base = settings.SYSTEM_PROMPT.format(company=settings.COMPANY_NAME)
    assert prompt.startswith(base + "\n\n")
    titles = passage_titles(request)
    assert set(titles.values()) == {kb["lantern-charging"].title, kb["lantern-battery"].title}
    assert sorted(titles) == [1, 2]
    instructions = KNOWLEDGE_INSTRUCTIONS.format(last=2)
    assert instructions in prompt
    for rule in ("Answer only from these passages", "[1] or [2]", "Never invent"):
        assert rule in instructions
    assert f"reply with exactly {NO_ANSWER_MARKER} and nothing else" in instructions
    # Each passage is there under its number, in full (it fits the default budget).
    section = offered_passages(request)
    for n, title in titles.items():
        body = Article.objects.get(title=title).body
        assert f"[{n}] {title}\n{body}" in section
    assert request["body"]["messages"][-1] == {"role": "user", "content": LANTERN_QUESTION}


def test_it_keeps_the_passages_within_the_token_budget(model, settings, db):
    sentence = (
        "Zephyr lantern battery note {i}.{j}: keep the battery of the lantern between twenty "
        "and eighty percent while it is stored in a cool and dry place."
    )
    for i in range(4):
        body = " ".join(sentence.format(i=i, j=j) for j in range(5))
        indexed_article(slug=f"long-{i}", title=f"Zephyr lantern battery {i}", body=body)

    answered("How do I store the Zephyr lantern battery?")
    unbounded = offered_passages(model.requests()[-1])
    assert len(passage_titles(model.requests()[-1])) == 4  # the default budget holds them all

    settings.KB_PROMPT_TOKENS = 250
    answered("How should I store the Zephyr lantern battery?")
    request = model.requests()[-1]
    section = offered_passages(request)
    assert estimate_tokens(section) <= 250 < estimate_tokens(unbounded)
    titles = passage_titles(request)
    assert 1 in titles and len(titles) < 4
    for entry in re.split(r"\n\n(?=\[\d+\] )", section):
        header, text = entry.split("\n", 1)
        body = Article.objects.get(title=header.split("] ", 1)[1]).body
        text = " ".join(text.split())  # passages may break a long paragraph in two
        assert body.startswith(text) and text.endswith(".")  # cut at a sentence end, if at all


def test_it_tells_the_model_there_are_no_passages_for_small_talk(model, kb):
    reply = answered("Hi there!")

    (request,) = model.requests()
    prompt = system_prompt(request)
    assert NO_PASSAGES_NOTE in prompt
    assert PASSAGES_HEADING not in prompt and not passage_titles(request)
    assert reply.status == "done" and not reply.abstained and reply.sources == []
    assert reply.text == "".join(expected_reply(request["body"]["messages"], 20))


def test_it_reads_a_short_follow_up_together_with_the_question_before_it(model, kb):
    first = answered("How do I recharge the Zephyr lantern?")
    # On its own, "how long does it take" is in no article.
    follow_up = answered("How long does it take?", first.conversation)

    assert not follow_up.abstained
    titles = passage_titles(model.requests()[-1])
    assert kb["lantern-charging"].title in titles.values()

    # A new question that doesn't point back is searched on its own.
    answered("How do I reset the Quokka doorbell?", first.conversation)
    assert set(passage_titles(model.requests()[-1]).values()) == {kb["quokka-doorbell"].title}


def test_it_searches_the_knowledge_base_once_per_reply_even_when_the_model_is_retried(
    model, kb, monkeypatch
):
    searches: list[str] = []
    real_search = knowledge_search.search

    def counting_search(query: str, k: int = 3) -> list[Hit]:
        searches.append(query)
        return real_search(query, k)

    monkeypatch.setattr(knowledge_search, "search", counting_search)
    model.set_fault("500")
    reply = answered(LANTERN_QUESTION)

    first, second = model.requests()
    assert searches == [LANTERN_QUESTION]
    assert first["body"]["messages"] == second["body"]["messages"]
    assert reply.status == "done" and reply.sources


def test_it_retries_when_the_knowledge_base_cannot_be_read(model, kb, monkeypatch):
    calls: list[str] = []
    real_search = knowledge_search.search

    def flaky_search(query: str, k: int = 3) -> list[Hit]:
        calls.append(query)
        if len(calls) == 1:
            raise DatabaseError("connection lost")
        return real_search(query, k)

    monkeypatch.setattr(knowledge_search, "search", flaky_search)
    reply = answered(LANTERN_QUESTION)

    assert len(calls) == 2 and len(model.requests()) == 1
    assert reply.status == "done" and reply.sources
    assert [f["type"] for f in frames_of(reply)].count("reply.start") == 1


# --- Citations become sources ----------------------------------------------------------------


def test_it_sends_and_stores_the_articles_the_answer_cites_as_numbered_sources(model, kb):
    reply = answered(LANTERN_QUESTION)

    (request,) = model.requests()
    titles = passage_titles(request)
    expected_text = "".join(expected_reply(request["body"]["messages"], 20))
    assert reply.text == expected_text and expected_text.endswith(" [2]")
    assert "[1]" in expected_text
    by_title = {article.title: article for article in kb.values()}
    expected = [as_source(by_title[titles[1]], 1), as_source(by_title[titles[2]], 2)]
    assert reply.sources == expected
    done = done_frame(reply)
    assert done["status"] == "done" and done["text"] == reply.text
    assert done["sources"] == expected
    assert reply.as_event()["sources"] == expected
    assert reply_text(frames_of(reply), reply.pk) == reply.text
    assert not reply.abstained and reply.provider == "openai"


def test_it_lists_sources_in_the_order_first_cited_and_ignores_numbers_it_never_offered(
    scripted, kb
):
    provider = scripted("Store it half full [2]. Plug it in [9] and wait [1][2].")
    reply = answered(LANTERN_QUESTION)

    (request,) = provider.requests
    offered = {p.n: p for p in request.knowledge.passages}
    assert sorted(offered) == [1, 2]
    expected = [
        {"n": p.n, "title": p.title, "url": p.url, "article_id": p.article_id}
        for p in (offered[2], offered[1])
    ]
    assert reply.sources == expected
    assert done_frame(reply)["sources"] == expected


def test_it_shows_no_sources_when_the_answer_cites_none_of_the_passages(scripted, kb):
    provider = scripted("Plug it into a USB port.")
    reply = answered(LANTERN_QUESTION)

    assert provider.requests[0].knowledge.passages  # passages were offered, but not cited
    assert reply.sources == [] and done_frame(reply)["sources"] == []
    assert not reply.abstained


def test_it_reads_grouped_citation_markers_and_lists_each_article_once():
    hits = [
        Hit(article_id=a, title=t, url="", text="Some text.", score=1.0, confidence=0.9)
        for a, t in ((5, "Five"), (6, "Six"), (5, "Five again"))
    ]
    passages = number_passages(hits, 1000)

    sources = cited_sources("A [3]. B [2, 1]. C [0] [4] [x].", passages)

    assert sources == [Source("Five again", "", 5, n=3), Source("Six", "", 6, n=2)]


# --- Nothing good enough: abstain ------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "offline"])
def test_it_says_plainly_it_does_not_know_and_offers_a_person_without_asking_a_model(
    model, kb, settings, provider
):
    settings.LLM_PROVIDER = provider
    reply = answered(OFF_TOPIC_QUESTION)

    assert model.requests() == []  # no model was asked
    assert (reply.status, reply.text, reply.abstained) == ("done", ENGLISH.abstain, True)
    assert "person" in reply.text and reply.sources == []
    assert reply.model == "" and reply.prompt_tokens == 0 and reply.provider == provider
    done = done_frame(reply)
    assert (done["status"], done["text"], done["sources"]) == ("done", ENGLISH.abstain, [])
    deltas = [f for f in frames_of(reply) if f["type"] == "reply.delta"]
    assert "".join(d["text"] for d in deltas) == ENGLISH.abstain


def test_it_abstains_when_the_knowledge_base_is_empty(model):
    reply = answered(LANTERN_QUESTION)
    assert model.requests() == [] and reply.abstained and reply.text == ENGLISH.abstain


def test_it_takes_the_confidence_threshold_a_model_needs_from_the_settings(model, kb, settings):
    confidence = knowledge_search.search(LANTERN_QUESTION, 1)[0].confidence

    settings.KB_MODEL_MIN_CONFIDENCE = confidence + 0.01
    assert answered(LANTERN_QUESTION).abstained
    assert model.requests() == []

    settings.KB_MODEL_MIN_CONFIDENCE = confidence - 0.01
    reply = answered(LANTERN_QUESTION)
    assert not reply.abstained and reply.sources
    assert len(model.requests()) == 1


def test_a_model_decides_the_passages_retrieval_is_unsure_of_where_the_offline_answerer_refuses(
    model, kb, settings
):
    confidence = knowledge_search.search(LANTERN_QUESTION, 1)[0].confidence
    # Too unsure for the offline answerer, which quotes whatever it is given; sure enough to
    # let a model read the passages and say whether they answer.
    settings.KB_MIN_CONFIDENCE = confidence + 0.01
    settings.KB_MODEL_MIN_CONFIDENCE = confidence - 0.01

    reply = answered(LANTERN_QUESTION)
    (request,) = model.requests()
    assert "[1] Recharging the Zephyr lantern" in system_prompt(request)
    assert not reply.abstained and reply.sources

    settings.LLM_PROVIDER = "offline"
    offline = answered(LANTERN_QUESTION)
    assert offline.abstained and offline.text == ENGLISH.abstain and len(model.requests()) == 1


def test_it_never_abstains_on_small_talk_or_a_message_with_nothing_to_look_up(model, kb, settings):
    settings.LLM_PROVIDER = "offline"
    reply = answered("thanks!")
    assert "You're welcome" in reply.text and not reply.abstained and reply.sources == []

    reply = answered("can you help me?")  # nothing to look up: ask, don't abstain
    assert reply.text == ENGLISH.ask_for_detail and not reply.abstained


# --- The offline answerer on the same grounding ----------------------------------------------


def test_it_answers_offline_from_the_passage_the_model_would_get_as_1(model, kb, settings):
    answered(LANTERN_QUESTION)
    model_titles = passage_titles(model.requests()[-1])

    settings.LLM_PROVIDER = "offline"
    reply = answered(LANTERN_QUESTION)

    best = Article.objects.get(title=model_titles[1])
    assert reply.sources[0] == as_source(best, 1)  # the model's [1] is the offline answer's
    assert done_frame(reply)["sources"] == reply.sources
    assert reply.provider == "offline" and not reply.abstained
    first_sentence = best.body.split(". ")[0]
    assert first_sentence in reply.text
    assert f"“{best.title}”" in reply.text


# --- Passages and the budget, piece by piece --------------------------------------------------


def test_it_cuts_a_passage_that_does_not_fit_at_a_sentence_end():
    text = "First sentence here. Second one is a bit longer than the first.\n\n- An item\n- B"
    assert cut_to_fit(text, 1000) == text
    assert cut_to_fit(text, 10) == "First sentence here."
    assert cut_to_fit(text, 17) == (
        "First sentence here. Second one is a bit longer than the first."
    )
    assert cut_to_fit(text, 2) == ""


def test_it_always_keeps_the_best_passage_and_drops_what_does_not_fit():
    long_text = " ".join(f"Sentence number {i} is about the Zephyr lantern." for i in range(40))
    hits = [
        Hit(article_id=i, title=f"Article {i}", url="", text=long_text, score=1, confidence=0.9)
        for i in range(3)
    ]

    tiny = number_passages(hits, 5)
    assert [p.n for p in tiny] == [1] and tiny[0].text

    some = number_passages(hits, 300)
    section = passages_section(some)
    assert estimate_tokens(section) <= 300
    assert [p.n for p in some] == list(range(1, len(some) + 1))
    assert some[0].text == long_text[: len(some[0].text)] and some[0].text.endswith(".")


def test_it_appends_the_knowledge_block_to_the_system_prompt_only():
    knowledge = ground([ChatMessage("user", "hello")])
    messages = [ChatMessage("system", "Be kind."), ChatMessage("user", "hello")]

    grounded = with_knowledge(messages, knowledge)

    assert grounded[0] == ChatMessage("system", f"Be kind.\n\n{NO_PASSAGES_NOTE}")
    assert grounded[1:] == messages[1:] and messages[0].content == "Be kind."


def test_it_answers_a_single_question_for_evaluations_as_a_reply_would(model, kb, settings):
    finished = answer_question(LANTERN_QUESTION)
    (request,) = model.requests()
    titles = passage_titles(request)
    assert [(s.n, s.title) for s in finished.sources] == [(1, titles[1]), (2, titles[2])]
    assert not finished.abstained

    abstained = answer_question(OFF_TOPIC_QUESTION)
    assert abstained.abstained and abstained.sources == [] and len(model.requests()) == 1

    settings.LLM_PROVIDER = "offline"
    offline = answer_question(LANTERN_QUESTION)
    assert offline.sources[0].n == 1 and offline.sources[0].title == titles[1]
