"""What the team keeps beside a conversation: internal notes and canned responses.

Moved here from the conversations app with their data (same tables, renamed; same
permissions, now under "inbox."): see the migrations conversations 0008-0009 and inbox 0001.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

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


class ReadMarker(models.Model):
    """How far one agent has read a conversation: customer turns after `read_at` are unread
    for that agent only (Conversation.agent_read_at is the whole team's, kept for the
    customer-facing and older code)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="one_read_marker")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.conversation_id} at {self.read_at:%Y-%m-%d %H:%M}"


class Waiting(models.Model):
    """Since when a conversation's customer has waited for an answer: their first message after
    the last answer (a written bot reply or an agent's reply); NULL when all is answered. Kept
    by database triggers on the turns (migration inbox 0002, both databases), so every writer
    of turns keeps it right, and the inbox sorts the longest waiting first on an index."""

    conversation = models.OneToOneField(
        Conversation, primary_key=True, on_delete=models.CASCADE, related_name="waiting"
    )
    since = models.DateTimeField(null=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.conversation_id} waiting since {self.since}"


class Label(models.Model):
    """A tag for triage ("billing", "bug"). Operators manage them in the admin; agents put
    existing ones on conversations (as in Chatwoot, agents don't invent new ones)."""

    name = models.CharField(max_length=40)
    colour = models.CharField(
        max_length=7,
        default="#6b7280",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a hex colour such as #2563eb.")],
        help_text="A CSS hex colour such as #2563eb.",
    )
    description = models.CharField(max_length=200, blank=True)
    conversations = models.ManyToManyField(
        Conversation, related_name="labels", blank=True, through="ConversationLabel"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="label_name_unique_ignoring_case"),
        ]

    def __str__(self) -> str:
        return self.name

    def as_event(self) -> dict[str, object]:
        return {"id": self.pk, "name": self.name, "colour": self.colour}


class ConversationLabel(models.Model):
    """A label on a conversation (kept in this app: conversations never imports inbox)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "label"], name="one_label_once")
        ]
        indexes = [models.Index(fields=["label", "conversation"])]

    def __str__(self) -> str:
        return f"{self.label_id} on {self.conversation_id}"
