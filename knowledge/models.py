from __future__ import annotations

import hashlib
import json

from django.db import models
from django.db.models import Q

from .language import question_key


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


# Bumped whenever search.text.split_markdown cuts the same article differently, so stored
# passages are cut again (2: long tables are cut between rows under their header).
PASSAGE_RULES = 2


def content_hash(title: str, body: str, url: str, tags: object) -> str:
    """The article as passages are cut from it, with the rules that cut it."""
    payload = json.dumps(
        [title, body, url, tags, PASSAGE_RULES], ensure_ascii=False, sort_keys=True
    )
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
    # For the ranker (knowledge.search.ranking): the article title's vector, and one vector per
    # sentence of the passage (search.text.passage_sentences), concatenated. Same format.
    title_embedding = models.BinaryField(null=True, blank=True)
    sentence_embeddings = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["article_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["article", "position"], name="passage_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.article_id}#{self.position}"


class ExampleQuestion(models.Model):
    """A question as customers ask it, labelled with the article that answers it, or with no
    article: a question the knowledge base must not answer (the bot hands over).

    Retrieval compares each new question with these (knowledge.search.ranking's example features):
    a customer's wording the articles never use still finds its article, and a near miss that
    looks like an article ("how much does the thermostat cost?") but was marked unanswerable
    makes the bot abstain. Operators add them in the admin or with `import_kb_examples`.
    """

    class Source(models.TextChoices):
        OPERATOR = "operator", "written by an operator"
        IMPORTED = "imported", "imported from a question set"
        CONVERSATION = "conversation", "taught from a question the bot couldn't answer"

    text = models.CharField(max_length=500)
    article = models.ForeignKey(
        Article,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="example_questions",
        help_text="The article that answers it. Empty: the knowledge base doesn't answer it, "
        "so the bot hands over.",
    )
    key = models.CharField(max_length=64, unique=True, editable=False)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.OPERATOR)
    # float32 little-endian, L2-normalised query embedding; empty until embedded (indexing).
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    embedding_model = models.CharField(max_length=100, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["article__title", "text"]

    def __str__(self) -> str:
        return self.text

    def save(self, *args: object, **kwargs: object) -> None:
        """Indexing owns the vector (knowledge.indexing writes it with an UPDATE): a save
        clears it when the text changed and otherwise leaves the stored one alone, whatever
        this instance was loaded with."""
        new_key = question_key(self.text)
        text_changed = new_key != self.key
        if text_changed:
            self.key = new_key
            self.embedding = None  # embedded again by indexing
            self.embedding_model = ""
        update_fields = kwargs.get("update_fields")
        if not self._state.adding and update_fields is None and not text_changed:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in ("embedding", "embedding_model")
            ]
        elif update_fields is not None and text_changed:
            kwargs["update_fields"] = {
                *update_fields,  # type: ignore[misc]
                "key",
                "embedding",
                "embedding_model",
            }
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_unanswerable(self) -> bool:
        return self.article_id is None
