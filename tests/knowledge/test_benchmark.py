"""Other companies' knowledge bases, loaded alone for a measurement and rolled back after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.benchmark import KnowledgeBaseFolder, folders, loaded_alone
from knowledge.models import Article, ExampleQuestion
from knowledge.search import search
from tests.fixtures_kb import parcels_article

pytestmark = pytest.mark.django_db

ARTICLES = {
    "lantern": (
        "Recharging the Zephyr lantern",
        "Plug the magnetic cable into any USB port. The ring glows green when it is full.",
    ),
    "doorbell": (
        "Resetting the Quokka doorbell",
        "Hold the reset button for ten seconds until the light blinks blue.",
    ),
}


def company(root: Path, name: str = "zephyr") -> Path:
    folder = root / name
    (folder / "articles").mkdir(parents=True)
    for slug, (title, body) in ARTICLES.items():
        (folder / "articles" / f"{slug}.md").write_text(
            f"---\ntitle: {title}\nslug: {slug}\n---\n{body}\n"
        )
    # Each company's customers word things their own way (its name, in every question).
    questions = [
        {
            "question": f"how do i charge the lantern {name}",
            "expected": "lantern",
            "kind": "paraphrase",
        },
        {"question": f"doorbell light reset {name}", "expected": "doorbell", "kind": "keyword"},
        {"question": f"cancel my netflix {name}", "expected": "none", "kind": "out_of_scope"},
    ]
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    examples = [
        {"question": "lantern won't charge", "expected": "lantern"},
        {"question": "do you sell tents", "expected": "none"},
    ]
    (folder / "examples.jsonl").write_text("\n".join(json.dumps(e) for e in examples))
    return folder


def test_it_loads_a_company_alone_and_leaves_the_installed_knowledge_base_as_it_was(tmp_path):
    installed = parcels_article()
    (zephyr,) = folders(company(tmp_path).parent)

    with loaded_alone(zephyr, examples=1):
        assert set(Article.objects.values_list("slug", flat=True)) == {"lantern", "doorbell"}
        assert list(ExampleQuestion.objects.values_list("text", flat=True)) == [
            "lantern won't charge"
        ]
        assert search("how do I recharge the Zephyr lantern", 1)[0].title.startswith("Recharging")

    assert list(Article.objects.values_list("pk", flat=True)) == [installed.pk]
    assert not ExampleQuestion.objects.exists()
    assert search("Do you ship to Norway?", 1)[0].article_id == installed.pk


def test_it_reads_the_demo_company_with_its_question_sets_as_examples():
    demo = KnowledgeBaseFolder.demo()
    assert demo.name == "brightwave" and len(demo.questions()) > 1000
    assert demo.examples(5) == demo.questions()[:5]


def test_it_finds_only_folders_with_articles_and_questions(tmp_path):
    company(tmp_path, "zephyr")
    (tmp_path / "notes").mkdir()
    assert [folder.name for folder in folders(tmp_path)] == ["zephyr"]
