"""The knowledge bases tests answer from (no tests here): the one help article of the reply
tests, and the demo articles without their example questions."""

from __future__ import annotations

import pytest

from knowledge import retrieval
from knowledge.models import Article
from knowledge.services import DEMO_DIR, load_markdown_folder


def parcels_article() -> Article:
    """Answers "Do you ship to Norway?" and "where is my parcel?"."""
    return Article.objects.create(
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
    retrieval.knowledge_index.invalidate()
    return {article.slug: article for article in Article.objects.all()}
