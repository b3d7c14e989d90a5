"""The admin: transcripts (conversations with their turns), customers, escalation rules,
business hours and the questions the bot didn't resolve.

Apps built on this one add their part of the transcript page with ConversationAdmin.extend
(the inbox: notes, exports and its link; the studio: test cases), so this app never imports
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from knowledge.language import question_key
from knowledge.models import Article, ExampleQuestion
from knowledge.services import NONE_LABEL, import_example_questions

from . import embedding, state, transcript, usage
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
# What another app adds to the transcript page: its entries (the inbox's notes), merged by time
# with the turns, and links (the inbox's live view), each for this request's user.
EntrySource = Callable[[HttpRequest, Conversation], Iterable[transcript.Entry]]
LinkSource = Callable[[HttpRequest, Conversation], "transcript.Link | None"]


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


class PromptVersionFilter(admin.SimpleListFilter):
    """Conversations with a reply from one prompt version (the studio's version page links
    here)."""

    title = "prompt version"
    parameter_name = "prompt_version"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # The studio's model, by the foreign key: this app never imports the studio.
        versions = Turn._meta.get_field("prompt_version").related_model._default_manager  # type: ignore[union-attr]
        return [(str(pk), name) for pk, name in versions.order_by("-pk").values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            replies = Turn.objects.filter(conversation=OuterRef("pk"), prompt_version=int(value))
            return queryset.filter(Exists(replies))
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
        PromptVersionFilter,
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
    # What a reader needs above the chat; the timestamps and usage fold away (a <details>).
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "customer",
                    ("status", "assignee"),
                    ("escalated_at", "escalation_reason"),
                    ("rating", "rating_comment"),
                ]
            },
        ),
        (
            "Details",
            {
                "classes": ["collapse"],
                "fields": [
                    "id",
                    ("created_at", "updated_at"),
                    "last_message_at",
                    "contact_email",
                    "resolved_at",
                    "rated_at",
                    "bot_usage",
                ],
            },
        ),
    ]
    # The turns are the chat the template draws (conversations/transcript.py), not an inline.
    change_form_template = "admin/conversations/conversation/change_form.html"
    inlines: ClassVar[list[type[admin.options.InlineModelAdmin[Any, Any]]]] = []  # extend()
    show_full_result_count = False
    actions: list[Action] = []  # apps built on this one add theirs: extend()
    entry_sources: list[EntrySource] = []
    link_sources: list[LinkSource] = []

    @classmethod
    def extend(
        cls,
        *,
        inlines: Sequence[type[admin.options.InlineModelAdmin[Any, Any]]] = (),
        actions: Sequence[Action] = (),
        entries: Sequence[EntrySource] = (),
        links: Sequence[LinkSource] = (),
    ) -> None:
        """Add an app's inlines, actions (marked with transcript_action), chat entries and
        links to the transcript page; called from that app's admin module."""
        have_inlines, have_actions = list(cls.inlines), list(cls.actions or [])
        cls.inlines = [*have_inlines, *(i for i in inlines if i not in have_inlines)]
        cls.actions = [*have_actions, *(a for a in actions if a not in have_actions)]
        have_entries, have_links = list(cls.entry_sources), list(cls.link_sources)
        cls.entry_sources = [*have_entries, *(e for e in entries if e not in have_entries)]
        cls.link_sources = [*have_links, *(k for k in links if k not in have_links)]

    def render_change_form(  # type: ignore[override]
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Conversation | None = None,
    ) -> Any:
        # Reached only once the admin has checked the user may view this conversation; the
        # messages need view_turn too (as the turn inline did before the chat).
        if obj is not None:
            user: Any = request.user
            turns = (
                transcript.turn_entries(obj, transcript.Viewer.of(user))
                if user.has_perm("conversations.view_turn")
                else []
            )
            context["transcript"] = transcript.merged(
                turns, *(source(request, obj) for source in self.entry_sources)
            )
            links = (source(request, obj) for source in self.link_sources)
            context["transcript_links"] = [link for link in links if link is not None]
        return super().render_change_form(request, context, add, change, form_url, obj)

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
