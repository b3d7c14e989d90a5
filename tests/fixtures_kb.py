"""The one help article the reply tests answer from (no tests here)."""

from __future__ import annotations

from knowledge.models import Article


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
