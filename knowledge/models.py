from __future__ import annotations

import hashlib
import json

from django.db import models
from django.db.models import Q


class Article(models.Model):
    """A help-centre article the bot answers from. The body is Markdown."""

    slug = models.SlugField(max_length=200, unique=True)
    title = models.CharField(max_length=300)
    body = models.TextField()
    url = models.URLField(blank=True, max_length=500)
    tags = models.JSONField(default=list, blank=True)
    language = models.CharField(max_length=12, default="en")
    published = models.BooleanField(default=True)
    # The file an article was ingested from (absolute path), so re-ingesting it updates this
    # article instead of adding a copy. Empty for articles written in the admin.
    source = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]
        constraints = [
            models.UniqueConstraint(
                fields=["source"], condition=~Q(source=""), name="article_unique_source"
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def content_hash(self) -> str:
        """Changes whenever anything retrieval reads of the article changes."""
        return content_hash(self.title, self.body, self.url, self.tags)


def content_hash(title: str, body: str, url: str, tags: object) -> str:
    payload = json.dumps([title, body, url, tags], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class Passage(models.Model):
    """A piece of a published article as retrieval indexes it, with its sentence embedding.

    Derived data: rebuilt from the article whenever the article's content hash changes, so an
    edit is re-split and re-embedded once (not at every index build or in every process).
    """

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="passages")
    position = models.PositiveIntegerField()
    heading = models.CharField(max_length=300, blank=True, default="")
    text = models.TextField()
    article_hash = models.CharField(max_length=64)
    # float32 little-endian, L2-normalised; empty when no embedding model was available.
    embedding = models.BinaryField(null=True, blank=True)
    embedding_model = models.CharField(max_length=100, blank=True, default="")
    # For the ranker (knowledge.ranking): the article title's vector, and one vector per
    # sentence of the passage (retrieval.passage_sentences), concatenated. Same format.
    title_embedding = models.BinaryField(null=True, blank=True)
    sentence_embeddings = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["article_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["article", "position"], name="passage_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.article_id}#{self.position}"
