from __future__ import annotations

from typing import cast

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from .models import Conversation, Customer, Turn


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
        "sources",
        "first_token_ms",
    )
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = [
        "short_id",
        "customer",
        "status",
        "assignee",
        "turn_count",
        "last_message_at",
        "created_at",
    ]
    list_filter = ["status", "created_at"]
    search_fields = ["customer__display_name", "customer__email", "turns__text"]
    ordering = ["-created_at"]
    date_hierarchy = "created_at"
    list_select_related = ["customer", "assignee"]
    readonly_fields = ["id", "customer", "created_at", "updated_at", "last_message_at"]
    fields = ["id", "customer", "status", "assignee", "created_at", "updated_at", "last_message_at"]
    inlines = [TurnInline]
    show_full_result_count = False

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
