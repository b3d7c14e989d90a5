"""The knowledge bases tests answer from (no tests here): the one help article of the reply
tests, and the demo articles without their example questions.

Searches read only what indexing stored, as in production: an article a test creates is
searchable once indexed (indexed_article), as the admin and ingest_kb index what they save."""

from __future__ import annotations

import pytest

from knowledge.indexing import sync_passages
from knowledge.models import Article
from knowledge.search import knowledge_index
from knowledge.services import DEMO_DIR, load_markdown_folder


def indexed_article(**fields: object) -> Article:
    """A new article, indexed (its passages and vectors stored) as saving it in the admin does."""
    article = Article.objects.create(**fields)
    sync_passages([article.pk])
    return article


def parcels_article() -> Article:
    """Answers "Do you ship to Norway?" and "where is my parcel?"."""
    return indexed_article(
        slug="parcels",
        title="Where is my parcel?",
        url="https://help.example.com/parcels",
        body=(
            "We ship every parcel with DHL, also to Norway. Shipping to Norway costs €14.95 and "
            "takes 4 to 6 business days. Track your parcel with the link in your shipping email."
        ),
    )


@pytest.fixture
def demo_kb(db: None) -> dict[str, Article]:
    """The demo articles by slug, without example questions (load_demo_kb adds those)."""
    load_markdown_folder(DEMO_DIR)
    knowledge_index.invalidate()
    return {article.slug: article for article in Article.objects.all()}
