"""Indexing happens when articles and example questions are written, never on a customer's
question: a search only reads what indexing stored."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from knowledge.indexing import sync_example_questions, sync_passages
from knowledge.models import Article, ExampleQuestion, Passage
from knowledge.search import search
from knowledge.services import import_example_questions

pytestmark = pytest.mark.django_db

LANTERN = dict(
    slug="lantern",
    title="Recharging the Zephyr lantern",
    body="To recharge the Zephyr lantern, plug its magnetic cable into any USB port.",
)


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def test_a_search_writes_nothing_and_finds_only_what_indexing_stored():
    article = Article.objects.create(**LANTERN)  # saved, as from a shell: not indexed yet

    with CaptureQueriesContext(connection) as queries:
        hits = search("how do I recharge the zephyr lantern", 3)
    assert hits == [] and writes(queries) == []

    sync_passages([article.pk])
    assert search("how do I recharge the zephyr lantern", 3)[0].article_id == article.pk


def test_importing_example_questions_embeds_them_before_any_question_is_asked():
    article = Article.objects.create(**LANTERN)
    sync_passages([article.pk])
    result = import_example_questions([("my lantern won't take a charge", "lantern")])

    assert result.created == 1 and result.embedded == 1
    assert not ExampleQuestion.objects.filter(embedding__isnull=True).exists()
    with CaptureQueriesContext(connection) as queries:
        search("my lantern won't take a charge", 1)
    assert writes(queries) == []


def test_setup_demo_indexes_the_demo_so_no_worker_or_question_waits_for_it():
    call_command("setup_demo", verbosity=0)

    assert Passage.objects.filter(embedding__isnull=False).count() > 50
    assert sync_passages().reindexed == 0  # nothing left for anyone else to index
    assert sync_example_questions() == 0


def test_passages_are_cut_again_when_the_rules_that_cut_them_change(monkeypatch):
    article = Article.objects.create(**LANTERN)
    sync_passages([article.pk])
    assert sync_passages([article.pk]).reindexed == 0  # nothing changed

    monkeypatch.setattr("knowledge.models.PASSAGE_RULES", 999)

    assert sync_passages([article.pk]).reindexed == 1
    assert all(p.article_hash == article.content_hash for p in Passage.objects.all())
