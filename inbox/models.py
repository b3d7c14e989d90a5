"""What the team keeps beside a conversation: internal notes and canned responses.

Moved here from the conversations app with their data (same tables, renamed; same
permissions, now under "inbox."): see the migrations conversations 0008-0009 and inbox 0001.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from conversations.models import Conversation


class Note(models.Model):
    """An internal note on a conversation: written by and for the team, never sent to the
    customer (a separate table, so no customer query or event can ever include one)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:60]


class CannedResponse(models.Model):
    """A saved reply an agent inserts by its shortcut ("/refund")."""

    shortcut = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=200)
    text = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shortcut"]

    def __str__(self) -> str:
        return f"/{self.shortcut}"
