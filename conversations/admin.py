"""The admin: transcripts (conversations with their turns), customers, escalation rules,
business hours and the questions the bot didn't resolve.

Apps built on this one add their part of the transcript page with ConversationAdmin.extend
(the inbox: notes and exports; the studio: test cases), so this app never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from knowledge.language import question_key
from knowledge.models import Article, ExampleQuestion
from knowledge.services import NONE_LABEL, import_example_questions

from . import embedding, state, usage
from .admin_business_hours import week_grid_view
from .models import (
    BusinessHours,
    Conversation,
    Customer,
    EscalationRule,
    Greeting,
    SuggestedQuestion,
    Turn,
    UnresolvedQuestion,
    WidgetSite,
)

# An admin action (modeladmin, request, queryset) -> response or None.
Action = Callable[..., Any]


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
        "files",
        "first_token_ms",
    )
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        # Withdrawn replies were never written: no empty bot rows in the transcript.
        queryset = super().get_queryset(request).exclude(status=Turn.Status.WITHDRAWN)
        return queryset.prefetch_related("attachments")

    @admin.display(description="Attachments")
    def files(self, turn: Turn) -> str:
        """Links to the turn's files (served to staff who may view conversations)."""
        return format_html_join(
            mark_safe("<br>"),  # noqa: S308 - a constant
            '<a href="{}" target="_blank" rel="noopener">{}</a>',
            ((a.as_event()["url"], a.name) for a in turn.attachments.all()),
        )

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def transcript_action(*, permission: str, description: str) -> Callable[[Action], Action]:
    """Marks an action another app adds to the transcripts (ConversationAdmin.extend): offered
    only to staff who have `permission` ("app_label.codename")."""

    def mark(action: Action) -> Action:
        marked = admin.action(description=description)(action)
        marked.required_permission = permission  # type: ignore[attr-defined]
        return marked

    return mark


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
    inlines = [TurnInline]
    show_full_result_count = False
    actions: list[Action] = []  # apps built on this one add theirs: extend()

    @classmethod
    def extend(
        cls,
        *,
        inlines: Sequence[type[admin.options.InlineModelAdmin[Any, Any]]] = (),
        actions: Sequence[Action] = (),
    ) -> None:
        """Add an app's inlines and actions (marked with transcript_action) to the transcript
        page; called from that app's admin module."""
        have_inlines, have_actions = list(cls.inlines), list(cls.actions or [])
        cls.inlines = [*have_inlines, *(i for i in inlines if i not in have_inlines)]
        cls.actions = [*have_actions, *(a for a in actions if a not in have_actions)]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        for name, entry in list(actions.items()):
            permission = getattr(entry[0], "required_permission", None) if entry else None
            if permission is not None and not request.user.has_perm(permission):
                del actions[name]
        return actions

    def save_model(self, request: HttpRequest, obj: Conversation, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Like every other change: the customer's page, the inbox and a streaming reply hear
        # of a status or assignee set here.
        state.conversation_changed(obj.pk)

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
        totals = usage.per_conversation(obj.pk)
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
    list_display = ["id", "display_name", "email", "external_id", "created_at"]
    search_fields = ["display_name", "email", "=external_id"]
    # Set only by the widget's verified identify (conversations/identity.py).
    readonly_fields = ["id", "external_id", "created_at"]


def selected(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """The selected conversations without the changelist's annotations and search joins (for
    actions that read them their own way)."""
    return Conversation.objects.filter(pk__in=queryset.values("pk"))


@admin.register(EscalationRule)
class EscalationRuleAdmin(admin.ModelAdmin[EscalationRule]):
    list_display = ["kind", "pattern", "threshold", "language", "enabled"]
    list_filter = ["kind", "language", "enabled"]
    list_editable = ["enabled"]
    search_fields = ["pattern"]


@admin.register(BusinessHours)
class BusinessHoursAdmin(admin.ModelAdmin[BusinessHours]):
    """The list is the weekly grid (admin_business_hours): the whole week on one page."""

    list_display = ["weekday", "opens", "closes"]
    list_filter = ["weekday"]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return week_grid_view(self, request)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Periods are added on the grid, a week at a time.
        return HttpResponseRedirect(reverse("admin:conversations_businesshours_changelist"))


@admin.register(Greeting)
class GreetingAdmin(admin.ModelAdmin[Greeting]):
    """The chat's first words (first_screen.py); without one, the bot's own in the visitor's
    language."""

    list_display = ["language", "text"]


@admin.register(SuggestedQuestion)
class SuggestedQuestionAdmin(admin.ModelAdmin[SuggestedQuestion]):
    """The questions offered on the chat's first screen: the first four enabled ones of the
    visitor's language (else of any language), lowest position first."""

    list_display = ["text", "language", "position", "enabled"]
    list_editable = ["position", "enabled"]
    list_filter = ["language", "enabled"]
    ordering = ["language", "position", "id"]
    search_fields = ["text"]


def embed_snippet(request: HttpRequest) -> str:
    """The line operators paste into their site's pages, with this install's address."""
    src = request.build_absolute_uri(f"{settings.STATIC_URL}chat/widget.js")
    return f'<script src="{src}" data-support-bot async></script>'


@admin.register(WidgetSite)
class WidgetSiteAdmin(admin.ModelAdmin[WidgetSite]):
    """The sites allowed to embed the widget; the list page shows the snippet to paste."""

    list_display = ["origin", "note", "created_at"]
    search_fields = ["origin", "note"]
    change_list_template = "admin/conversations/widgetsite/change_list.html"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        context = {
            **(extra_context or {}),
            "embed_snippet": embed_snippet(request),
            "environment_origins": settings.WIDGET_ALLOWED_ORIGINS,
            "any_site_may_embed": embedding.any_site_may_embed(),
        }
        return super().changelist_view(request, context)


class TeachArticleForm(forms.Form):
    article = forms.ModelChoiceField(
        queryset=Article.objects.filter(published=True),
        empty_label=None,
        help_text="Customers asking questions like these will get this article.",
    )


class BotDidFilter(admin.SimpleListFilter):
    title = "what the bot did"
    parameter_name = "bot"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("abstained", "Couldn't answer"),
            ("answered", "Answered, then the customer asked for a person"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("abstained", "answered"):
            return queryset.filter(abstained=self.value() == "abstained")
        return queryset


@admin.register(UnresolvedQuestion)
class UnresolvedQuestionAdmin(admin.ModelAdmin[UnresolvedQuestion]):
    """Questions the bot didn't resolve, newest first: write the missing article, or teach
    retrieval that such questions are answered by an existing article, or are rightly handed
    over (knowledge.ExampleQuestion)."""

    list_display = ["question", "bot_did", "asked_at", "conversation_link", "taught_as"]
    list_select_related = ["reply_to", "conversation"]
    list_filter = [BotDidFilter]
    search_fields = ["reply_to__text"]
    date_hierarchy = "created_at"
    actions = ["teach_article", "teach_unanswerable"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[UnresolvedQuestion]:
        return UnresolvedQuestion.to_review().select_related("reply_to", "conversation")

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        # One query for the page's labels, not one per row; kept on the rows (this admin
        # object is shared by concurrent requests).
        rows = [turn for turn in changelist.result_list if turn.reply_to]
        keys = {question_key(turn.reply_to.text) for turn in rows}
        examples = {
            example.key: example
            for example in ExampleQuestion.objects.filter(key__in=keys).select_related("article")
        }
        for turn in rows:
            turn.taught_example = examples.get(question_key(turn.reply_to.text))
        return changelist

    @admin.display(description="question")
    def question(self, turn: UnresolvedQuestion) -> str:
        text = turn.reply_to.text if turn.reply_to else ""
        return text if len(text) <= 200 else text[:200] + "…"

    @admin.display(description="what the bot did")
    def bot_did(self, turn: UnresolvedQuestion) -> str:
        if turn.abstained:
            return "couldn't answer"
        titles = ", ".join(
            str(source.get("title", "")) for source in turn.sources if isinstance(source, dict)
        )
        answered = f"answered from {titles}" if titles else "answered"
        return f"{answered}, then the customer asked for a person"

    @admin.display(description="asked", ordering="reply_to__created_at")
    def asked_at(self, turn: UnresolvedQuestion) -> Any:
        return turn.reply_to.created_at if turn.reply_to else None

    @admin.display(description="conversation")
    def conversation_link(self, turn: UnresolvedQuestion) -> str:
        url = reverse("admin:conversations_conversation_change", args=[turn.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(turn.conversation_id)[:8])

    @admin.display(description="taught as")
    def taught_as(self, turn: UnresolvedQuestion) -> str:
        example: ExampleQuestion | None = getattr(turn, "taught_example", None)
        if example is None:
            return "—"
        return example.article.title if example.article else "hand over"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_teach_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("knowledge.add_examplequestion") and request.user.has_perm(
            "knowledge.change_examplequestion"
        )

    @admin.action(
        description="Teach: questions like these are answered by an article…",
        permissions=["teach"],
    )
    def teach_article(
        self, request: HttpRequest, queryset: QuerySet[UnresolvedQuestion]
    ) -> TemplateResponse | None:
        form = TeachArticleForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            article: Article = form.cleaned_data["article"]
            self._teach(request, queryset, article.slug, article.title)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Teach the bot which article answers these questions",
            "opts": self.model._meta,
            "form": form,
            "questions": [turn.reply_to.text for turn in queryset if turn.reply_to],
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action": "teach_article",
        }
        return TemplateResponse(request, "admin/conversations/teach_article.html", context)

    @admin.action(
        description="Teach: questions like these are not answered here (hand over)",
        permissions=["teach"],
    )
    def teach_unanswerable(
        self, request: HttpRequest, queryset: QuerySet[UnresolvedQuestion]
    ) -> None:
        self._teach(request, queryset, NONE_LABEL, "handing over")

    def _teach(
        self,
        request: HttpRequest,
        queryset: QuerySet[UnresolvedQuestion],
        label: str,
        described: str,
    ) -> None:
        questions = [(turn.reply_to.text, label) for turn in queryset if turn.reply_to]
        result = import_example_questions(questions, source=ExampleQuestion.Source.CONVERSATION)
        taught = result.created + result.relabelled + result.unchanged
        self.message_user(
            request,
            f"{taught} {'question' if taught == 1 else 'questions'} taught as {described}: "
            "similar questions are judged by them from the next question on.",
            messages.SUCCESS,
        )
        for reason in result.skipped:
            self.message_user(request, f"Not taught: {reason}", messages.WARNING)
