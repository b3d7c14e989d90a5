"""The inbox's part of the admin: canned responses, and on the transcript page the internal
notes (read-only: agents write them in the inbox) and the exports."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from conversations.admin import ConversationAdmin, selected, transcript_action
from conversations.models import Conversation

from . import exports
from .models import CannedResponse, Label, Note


class NoteInline(admin.TabularInline[Note, Conversation]):
    """Internal notes, for review: they are written in the agent inbox and never shown to
    customers."""

    model = Note
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "author", "text")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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


ConversationAdmin.extend(inlines=[NoteInline], actions=[export_csv, export_jsonl])


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin[Label]):
    """Operators manage the labels agents put on conversations (inbox.add_label etc.)."""

    list_display = ["name", "colour", "description"]
    search_fields = ["name"]
