"""The prompt studio in the admin: prompt versions (drafts edited in place, published ones
read-only, "Edit as new draft", "Publish", "Activate" and "Roll back" with a reason), the
activation audit trail (read-only), the model price table, costs and the fine-tuning export.

Only Operators (and superusers) have the studio.* permissions (conversations/roles.py); agents
and staff without a role get 403 everywhere here.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from conversations import usage
from conversations.admin import ConversationAdmin, selected, transcript_action
from conversations.models import Conversation, Turn

from . import finetune, services
from .evaluation import EvaluationError, case_from_conversation
from .forms import PhraseListField
from .models import Activation, ModelPrice, PromptVersion, TestSet
from .provider_notice import offline_notice


class ReasonActionForm(ActionForm):
    """The action bar, with the reason an activation or a rollback is recorded with."""

    reason = forms.CharField(
        required=False,
        max_length=1000,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "Why (for the audit trail)"}),
    )


def _turns_of_version(value: str) -> Subquery:
    turns = (
        Turn.objects.filter(prompt_version=OuterRef("pk"), author=Turn.Author.BOT)
        .values("prompt_version")
        .order_by()
    )
    if value == "turns":
        return Subquery(turns.annotate(v=Count("id")).values("v"), output_field=IntegerField())
    if value == "tokens":
        return Subquery(
            turns.annotate(
                v=Sum(Coalesce("prompt_tokens", 0) + Coalesce("completion_tokens", 0))
            ).values("v"),
            output_field=IntegerField(),
        )
    return Subquery(turns.annotate(v=Sum("cost")).values("v"))


class PromptVersionForm(forms.ModelForm[PromptVersion]):
    # One stop sequence a line instead of a JSON list (OpenAI takes at most four).
    stop = PhraseListField(
        max_items=4,
        max_item_length=100,
        item_name="stop sequence",
        help_text="Optional. One stop sequence a line, at most four: the reply ends before it.",
    )

    class Meta:
        model = PromptVersion
        fields = ["name", *PromptVersion.CONTENT_FIELDS]  # the admin's `fields` decide


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin[PromptVersion]):
    form = PromptVersionForm
    # Shows the offline-answerer notice above the form (offline_notice below).
    change_form_template = "admin/studio/promptversion/change_form.html"
    list_display = [
        "name",
        "id",
        "active_marker",
        "state",
        "model_name",
        "temperature",
        "turns",
        "tokens",
        "cost",
        "created_by",
        "created_at",
    ]
    list_display_links = ["name"]
    list_filter = ["state", "is_active", "provider"]
    search_fields = ["name", "system_prompt", "model"]
    ordering = ["-is_active", "-created_at"]
    action_form = ReasonActionForm
    actions = [
        "publish_selected",
        "edit_as_new_draft",
        "activate_selected",
        "roll_back",
        "download_daily_costs",
    ]
    fields = [
        "name",
        "system_prompt",
        ("provider", "model"),
        ("temperature", "top_p", "max_tokens"),
        "stop",
        ("history_tokens", "knowledge_tokens"),
        ("requests_per_min", "tokens_per_min"),
        ("state", "is_active"),
        ("parent", "created_by", "created_at", "published_at"),
        "daily_costs",
        "conversations",
    ]
    STATE_FIELDS = (
        "state",
        "is_active",
        "parent",
        "created_by",
        "created_at",
        "published_at",
        "daily_costs",
        "conversations",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromptVersion]:
        return (
            super()
            .get_queryset(request)
            .select_related("created_by")
            .annotate(
                turn_total=_turns_of_version("turns"),
                token_total=_turns_of_version("tokens"),
                cost_total=_turns_of_version("cost"),
            )
        )

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id) if object_id else None
        context = {
            **(extra_context or {}),
            "offline_notice": offline_notice(obj.provider if obj else ""),
        }
        return super().changeform_view(request, object_id, form_url, context)

    def get_readonly_fields(self, request: HttpRequest, obj: PromptVersion | None = None) -> Any:
        if obj is not None and obj.is_published:
            return ["name", *PromptVersion.CONTENT_FIELDS, *self.STATE_FIELDS]
        return list(self.STATE_FIELDS)

    def save_model(self, request: HttpRequest, obj: PromptVersion, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
            obj.state = PromptVersion.State.DRAFT
        try:
            super().save_model(request, obj, form, change)
        except ValidationError as exc:  # a published version's content (model.save refuses)
            raise PermissionDenied(exc.messages[0]) from exc

    def has_delete_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        # Turns and the audit trail point at published versions: only drafts go away.
        if obj is not None and obj.is_published:
            return False
        return super().has_delete_permission(request, obj)

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("studio.activate_promptversion")

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("studio.export_finetune")

    # --- Columns ---

    @admin.display(description="Active", boolean=True, ordering="is_active")
    def active_marker(self, obj: PromptVersion) -> bool:
        return obj.is_active

    @admin.display(description="Model")
    def model_name(self, obj: PromptVersion) -> str:
        return obj.model or "(OPENAI_MODEL)"

    @admin.display(description="Turns", ordering="turn_total")
    def turns(self, obj: PromptVersion) -> int:
        return int(getattr(obj, "turn_total", None) or 0)

    @admin.display(description="Tokens", ordering="token_total")
    def tokens(self, obj: PromptVersion) -> int:
        return int(getattr(obj, "token_total", None) or 0)

    @admin.display(description="Cost", ordering="cost_total")
    def cost(self, obj: PromptVersion) -> str:
        return f"{Decimal(getattr(obj, 'cost_total', None) or 0):.4f}"

    @admin.display(description="Cost per day")
    def daily_costs(self, obj: PromptVersion) -> str:
        if obj.pk is None:
            return "-"
        rows = usage.per_day(version_id=obj.pk)
        if not rows:
            return "No replies yet."
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    day.isoformat(),
                    totals["turns"],
                    totals["prompt_tokens"] + totals["completion_tokens"],
                    f"{totals['cost']:.4f}",
                )
                for day, totals in rows
            ),
        )
        return format_html(
            "<table><tr><th>Day</th><th>Replies</th><th>Tokens</th><th>Cost</th></tr>{}</table>",
            body,
        )

    @admin.display(description="Conversations")
    def conversations(self, obj: PromptVersion) -> str:
        """Its transcripts in the admin (ConversationAdmin's prompt version filter)."""
        if obj.pk is None:
            return "-"
        url = reverse("admin:conversations_conversation_changelist")
        return format_html(
            '<a href="{}?prompt_version={}">Conversations this version replied in</a>', url, obj.pk
        )

    # --- Actions ---

    def _reason(self, request: HttpRequest) -> str:
        return str(request.POST.get("reason", "")).strip()

    @admin.action(
        description="Publish selected drafts (makes them read-only)", permissions=["change"]
    )
    def publish_selected(self, request: HttpRequest, queryset: QuerySet[PromptVersion]) -> None:
        drafts = list(queryset.filter(state=PromptVersion.State.DRAFT))
        for version in drafts:
            services.publish(version, by=request.user)
        self.message_user(request, f"Published {len(drafts)} version(s).", messages.SUCCESS)

    @admin.action(description="Edit as new draft", permissions=["add"])
    def edit_as_new_draft(
        self, request: HttpRequest, queryset: QuerySet[PromptVersion]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return None
        source = queryset.get()
        draft = services.create_draft(source, by=request.user, name=f"{source.name} (edit)")
        self.message_user(request, f"New draft #{draft.pk} from #{source.pk}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:studio_promptversion_change", args=[draft.pk]))

    @admin.action(
        description="Activate (the bot uses it from the next turn)", permissions=["activate"]
    )
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[PromptVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            record = services.activate(version, by=request.user, reason=self._reason(request))
        except services.GateBlocked as exc:
            self.message_user(
                request,
                f"Not activated: {exc} Give a reason to activate it anyway.",
                messages.ERROR,
            )
            return
        except services.NotPublished as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        note = " (evaluation gate overridden)" if record.gate_overridden else ""
        self.message_user(request, f"{version} is now active{note}.", messages.SUCCESS)

    @admin.action(
        description="Roll back to the previously active version", permissions=["activate"]
    )
    def roll_back(self, request: HttpRequest, queryset: QuerySet[PromptVersion]) -> None:
        if not queryset.filter(is_active=True).exists():
            self.message_user(request, "Select the active version to roll it back.", messages.ERROR)
            return
        try:
            record = services.rollback(by=request.user, reason=self._reason(request))
        except services.NothingToRollBackTo as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Rolled back to {record.version}.", messages.SUCCESS)

    @admin.action(description="Download cost per day (CSV)", permissions=["view"])
    def download_daily_costs(
        self, request: HttpRequest, queryset: QuerySet[PromptVersion]
    ) -> HttpResponse:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "version_id",
                "version",
                "day",
                "replies",
                "prompt_tokens",
                "completion_tokens",
                "cost",
            ]
        )
        for version in queryset:
            for day, totals in usage.per_day(version_id=version.pk):
                writer.writerow(
                    [
                        version.pk,
                        version.name,
                        day.isoformat(),
                        totals["turns"],
                        totals["prompt_tokens"],
                        totals["completion_tokens"],
                        totals["cost"],
                    ]
                )
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="costs-per-day.csv"'
        return response

    # --- The fine-tuning export (GET .../export-finetune/?min_rating=4&since=2026-01-31) ---

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export-finetune/",
            self.admin_site.admin_view(self.export_finetune_view),
            name="studio_promptversion_export_finetune",
        )
        return [export, *super().get_urls()]

    def export_finetune_view(self, request: HttpRequest) -> StreamingHttpResponse:
        if not self.has_export_permission(request):
            raise PermissionDenied
        try:
            min_rating = min(5, max(1, int(request.GET.get("min_rating", 4))))
            since_text = request.GET.get("since")
            since = datetime.date.fromisoformat(since_text) if since_text else None
        except ValueError as exc:
            raise PermissionDenied(f"bad parameter: {exc}") from exc
        lines: Iterator[str] = finetune.finetune_jsonl(min_rating, since)
        response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="finetune.jsonl"'
        return response


@admin.register(Activation)
class ActivationAdmin(admin.ModelAdmin[Activation]):
    """The audit trail: who changed the active version, when and why. Read-only."""

    list_display = ["at", "action", "version", "previous", "by", "reason", "gate_overridden"]
    list_filter = ["action", "gate_overridden"]
    list_select_related = ["version", "previous", "by"]
    search_fields = ["reason", "version__name"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    list_display = ["model", "input_per_million", "output_per_million", "currency"]
    search_fields = ["model"]


# --- On the transcript page ----------------------------------------------------------------------

CASES_FROM_CONVERSATIONS = "From conversations"


@transcript_action(
    permission="studio.add_testcase",
    description=f"Make evaluation test cases (test set “{CASES_FROM_CONVERSATIONS}”)",
)
def make_test_cases(
    modeladmin: ConversationAdmin, request: HttpRequest, queryset: QuerySet[Conversation]
) -> None:
    test_set, _created = TestSet.objects.get_or_create(
        name=CASES_FROM_CONVERSATIONS,
        defaults={"description": "Cases made from real conversations in the admin."},
    )
    made, skipped = 0, []
    for conversation in selected(queryset):
        try:
            case_from_conversation(conversation, test_set)
            made += 1
        except EvaluationError as exc:
            skipped.append(f"{str(conversation.pk)[:8]}: {exc}")
    modeladmin.message_user(request, f"{made} test case(s) added to “{test_set.name}”.")
    for reason in skipped:
        modeladmin.message_user(request, f"Skipped {reason}", level=messages.WARNING)


ConversationAdmin.extend(actions=[make_test_cases])
