"""The inbox's part of the admin: canned responses, and on the transcript page the internal
notes (read-only, among the messages: agents write them in the inbox), the exports and the
link to the live view."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from conversations.admin import ConversationAdmin, selected, transcript_action
from conversations.models import Conversation, staff_name
from conversations.transcript import Entry, Link

from . import exports, services
from .models import CannedResponse, Label, Note


def note_entries(request: HttpRequest, conversation: Conversation) -> list[Entry]:
    """Internal notes in the transcript, marked as such: written in the agent inbox, never
    shown to customers (one query, whatever their number); for staff who may view notes."""
    if not request.user.has_perm("inbox.view_note"):
        return []
    notes = Note.objects.filter(conversation=conversation).select_related("author")
    return [
        Entry(
            kind="note",
            author=staff_name(note.author) or "Agent (deleted)",
            at=note.created_at,
            text=note.text,
            order=(1, note.pk),
        )
        for note in notes
    ]


def inbox_link(request: HttpRequest, conversation: Conversation) -> Link | None:
    """The live view, for staff who may work the inbox."""
    if not request.user.has_perm(services.WORK_INBOX):
        return None
    return Link("Open in inbox", reverse("inbox:conversation", args=[conversation.pk]))


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin[CannedResponse]):
    list_display = ["shortcut", "title", "updated_at"]
    search_fields = ["shortcut", "title", "text"]


EXPORT_PERMISSION = "conversations.export_conversations"


@transcript_action(permission=EXPORT_PERMISSION, description="Export selected conversations as CSV")
def export_csv(
    modeladmin: ConversationAdmin, request: HttpRequest, queryset: QuerySet[Conversation]
) -> StreamingHttpResponse:
    return _download(exports.csv_lines(selected(queryset)), "text/csv; charset=utf-8", "csv")


@transcript_action(
    permission=EXPORT_PERMISSION, description="Export selected conversations as JSON Lines"
)
def export_jsonl(
    modeladmin: ConversationAdmin, request: HttpRequest, queryset: QuerySet[Conversation]
) -> StreamingHttpResponse:
    lines = exports.jsonl_lines(selected(queryset))
    return _download(lines, "application/x-ndjson; charset=utf-8", "jsonl")


def _download(lines: Iterable[str], content_type: str, extension: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{extension}"'
    return response


ConversationAdmin.extend(
    actions=[export_csv, export_jsonl], entries=[note_entries], links=[inbox_link]
)


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin[Label]):
    """Operators manage the labels agents put on conversations (inbox.add_label etc.)."""

    list_display = ["name", "colour", "description"]
    search_fields = ["name"]
