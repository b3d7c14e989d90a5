"""Evaluation in the admin: test sets with their cases inline, and runs (read-only) with
their results inline. Imported from StudioConfig.ready()."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .forms import EarlierTurnsField, PhraseListField
from .models import EvalResult, EvalRun, TestCase, TestSet


class TestCaseForm(forms.ModelForm[TestCase]):
    # One phrase a line (and the earlier turns as a short script) instead of JSON; stored as
    # the same lists.
    prior_turns = EarlierTurnsField(
        label="Earlier turns",
        help_text='Optional. One turn a line, starting with "Customer:" or "Bot:"; a line '
        "without one continues the turn above.",
    )
    must_contain = PhraseListField(
        help_text="One phrase a line: the reply must contain every one (case-insensitive)."
    )
    must_not_contain = PhraseListField(
        help_text="One phrase a line: the reply must contain none of them."
    )

    class Meta:
        model = TestCase
        fields = [
            "message",
            "prior_turns",
            "must_cite",
            "must_contain",
            "must_not_contain",
            "must_escalate",
            "source_conversation",
        ]


class TestCaseInline(admin.StackedInline[TestCase, TestSet]):
    model = TestCase
    form = TestCaseForm
    extra = 1
    fields = tuple(TestCaseForm.Meta.fields)
    # The article is chosen by its title (the article admin's search), not typed as an id.
    autocomplete_fields = ("must_cite",)
    raw_id_fields = ("source_conversation",)


class TestSetAdmin(admin.ModelAdmin[TestSet]):
    list_display = ("name", "case_count", "created_at")
    search_fields = ("name", "description")
    inlines = [TestCaseInline]

    @admin.display(description="Cases")
    def case_count(self, obj: TestSet) -> int:
        return obj.cases.count()


class EvalResultInline(admin.TabularInline[EvalResult, EvalRun]):
    model = EvalResult
    extra = 0
    can_delete = False
    fields = (
        "case",
        "passed",
        "checks",
        "reply",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EvalRunAdmin(admin.ModelAdmin[EvalRun]):
    list_display = ("id", "version", "test_set", "status", "done", "total", "overall", "created_at")
    list_filter = ("status", "test_set")
    readonly_fields = (
        "version",
        "test_set",
        "status",
        "done",
        "total",
        "scores",
        "error",
        "started_by",
        "created_at",
        "finished_at",
    )
    inlines = [EvalResultInline]

    @admin.display(description="Overall")
    def overall(self, obj: EvalRun) -> str:
        score = obj.scores.get("overall") if isinstance(obj.scores, dict) else None
        return "—" if score is None else f"{float(score):.2f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start from /studio/evaluations/

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


if not admin.site.is_registered(TestSet):
    admin.site.register(TestSet, TestSetAdmin)
if not admin.site.is_registered(EvalRun):
    admin.site.register(EvalRun, EvalRunAdmin)
