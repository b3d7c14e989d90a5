from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from . import exports
from .models import (
    BusinessHours,
    CannedResponse,
    Conversation,
    Customer,
    EscalationRule,
    Note,
    Turn,
)


class TurnInline(admin.TabularInline[Turn, Conversation]):
    model = Turn
    fk_name = "conversation"
    extra = 0
    can_delete = False
    ordering = ["id"]
    fields = readonly_fields = (
        "created_at",
        "author",
        "agent",
        "text",
        "status",
        "model",
        "prompt_version",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "sources",
        "first_token_ms",
    )
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        # Withdrawn replies were never written: no empty bot rows in the transcript.
        return super().get_queryset(request).exclude(status=Turn.Status.WITHDRAWN)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


CASES_FROM_CONVERSATIONS = "From conversations"


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


class EscalatedFilter(admin.SimpleListFilter):
    title = "escalated"
    parameter_name = "escalated"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(escalated_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(escalated_at__isnull=True)
        return queryset


class RatingFilter(admin.SimpleListFilter):
    title = "rating"
    parameter_name = "rating"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(n), "★" * n) for n in range(5, 0, -1)] + [("none", "Not rated")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "none":
            return queryset.filter(rating__isnull=True)
        if value and value.isdigit():
            return queryset.filter(rating=int(value))
        return queryset


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = [
        "short_id",
        "customer",
        "status",
        "assignee",
        "escalation_reason",
        "rating",
        "turn_count",
        "last_message_at",
        "created_at",
    ]
    list_filter = [
        "status",
        ("assignee", admin.RelatedOnlyFieldListFilter),
        EscalatedFilter,
        "escalation_reason",
        RatingFilter,
        "created_at",
    ]
    search_fields = [
        "customer__display_name",
        "customer__email",
        "contact_email",
        "turns__text",
        "rating_comment",
    ]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"
    list_select_related = ["customer", "assignee"]
    readonly_fields = [
        "id",
        "customer",
        "created_at",
        "updated_at",
        "last_message_at",
        "escalated_at",
        "escalation_reason",
        "contact_email",
        "resolved_at",
        "rating",
        "rating_comment",
        "rated_at",
        "bot_usage",
    ]
    fields = [
        "id",
        "customer",
        "status",
        "assignee",
        "created_at",
        "updated_at",
        "last_message_at",
        ("escalated_at", "escalation_reason"),
        "contact_email",
        "resolved_at",
        ("rating", "rated_at"),
        "rating_comment",
        "bot_usage",
    ]
    inlines = [TurnInline, NoteInline]
    show_full_result_count = False
    actions = ["export_csv", "export_jsonl", "make_test_cases"]

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("conversations.export_conversations")

    def has_make_test_case_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("studio.add_testcase")

    @admin.action(
        description=f"Make evaluation test cases (test set “{CASES_FROM_CONVERSATIONS}”)",
        permissions=["make_test_case"],
    )
    def make_test_cases(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        from studio.evaluation import EvaluationError, case_from_conversation
        from studio.models import TestSet

        test_set, _created = TestSet.objects.get_or_create(
            name=CASES_FROM_CONVERSATIONS,
            defaults={"description": "Cases made from real conversations in the admin."},
        )
        made, skipped = 0, []
        for conversation in _plain(queryset):
            try:
                case_from_conversation(conversation, test_set)
                made += 1
            except EvaluationError as exc:
                skipped.append(f"{str(conversation.pk)[:8]}: {exc}")
        self.message_user(request, f"{made} test case(s) added to “{test_set.name}”.")
        for reason in skipped:
            self.message_user(request, f"Skipped {reason}", level=messages.WARNING)

    @admin.action(description="Export selected conversations as CSV", permissions=["export"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> StreamingHttpResponse:
        return _download(exports.csv_lines(_plain(queryset)), "text/csv; charset=utf-8", "csv")

    @admin.action(
        description="Export selected conversations as JSON Lines", permissions=["export"]
    )
    def export_jsonl(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> StreamingHttpResponse:
        lines = exports.jsonl_lines(_plain(queryset))
        return _download(lines, "application/x-ndjson; charset=utf-8", "jsonl")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return cast(
            "QuerySet[Conversation]",
            super().get_queryset(request).annotate(turn_total=Count("turns")),
        )

    def get_search_results(self, request, queryset, search_term):  # type: ignore[no-untyped-def]
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # Visitors have no name yet: let staff paste the visitor id (or its first characters).
        term = search_term.strip().lower()
        if term and all(c in "0123456789abcdef-" for c in term):
            queryset |= self.model.objects.filter(customer__id__startswith=term).annotate(
                turn_total=Count("turns")
            )
        return queryset, True

    @admin.display(description="Bot usage")
    def bot_usage(self, obj: Conversation) -> str:
        from studio import costs

        totals = costs.per_conversation(obj.pk)
        return (
            f"replies: {totals['turns']}, tokens: {totals['prompt_tokens']:,} prompt + "
            f"{totals['completion_tokens']:,} completion, cost: {totals['cost']:.4f}"
        )

    @admin.display(description="Conversation", ordering="created_at")
    def short_id(self, obj: Conversation) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Turns", ordering="turn_total")
    def turn_count(self, obj: Conversation) -> int:
        return obj.turn_total  # type: ignore[attr-defined,no-any-return]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin[Customer]):
    list_display = ["id", "display_name", "email", "created_at"]
    search_fields = ["display_name", "email"]
    readonly_fields = ["id", "created_at"]


def _plain(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """The selected conversations without the changelist's annotations and search joins."""
    return Conversation.objects.filter(pk__in=queryset.values("pk"))


def _download(lines: Any, content_type: str, extension: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{extension}"'
    return response


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin[CannedResponse]):
    list_display = ["shortcut", "title", "updated_at"]
    search_fields = ["shortcut", "title", "text"]


@admin.register(EscalationRule)
class EscalationRuleAdmin(admin.ModelAdmin[EscalationRule]):
    list_display = ["kind", "pattern", "threshold", "language", "enabled"]
    list_filter = ["kind", "language", "enabled"]
    list_editable = ["enabled"]
    search_fields = ["pattern"]


@admin.register(BusinessHours)
class BusinessHoursAdmin(admin.ModelAdmin[BusinessHours]):
    list_display = ["weekday", "opens", "closes"]
    list_filter = ["weekday"]
