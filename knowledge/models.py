from __future__ import annotations

from django.db import models


class Article(models.Model):
    """A help-centre article the bot answers from. The body is Markdown."""

    slug = models.SlugField(max_length=200, unique=True)
    title = models.CharField(max_length=300)
    body = models.TextField()
    url = models.URLField(blank=True, max_length=500)
    tags = models.JSONField(default=list, blank=True)
    language = models.CharField(max_length=12, default="en")
    published = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title
