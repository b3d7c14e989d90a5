"""The knowledge base in the admin: operators write, edit, publish and unpublish articles.

Every change reaches retrieval at once: saves go through Model.save() and the bulk actions set
`updated_at`, so the index's signature changes and the next question rebuilds it; and after
the transaction commits the article's passages are re-split and re-embedded (or dropped when
it is unpublished), so that work is done before the next question rather than during it.

Nothing an article contains is marked safe: Django escapes it in every page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .indexing import sync_example_questions_after_commit, sync_passages
from .language import article_language, language_name, question_key, tidy_question
from .models import Article, ExampleQuestion, Passage
from .services import EXAMPLE_MAX_CHARS, clean_tags, is_language_code

logger = logging.getLogger(__name__)

PASSAGE_PREVIEW_CHARS = 200
DETECT_PLACEHOLDER = "Detect automatically"


def sync_after_commit(article_ids: Iterable[int]) -> None:
    """Bring these articles' passages up to date once the current transaction commits."""
    ids = list(article_ids)
    if ids:
        transaction.on_commit(lambda: sync_passages(ids), robust=True)


class ArticleForm(forms.ModelForm[Article]):
    url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Where customers can read the article; answers link to it.",
    )
    tags = forms.CharField(
        required=False,
        help_text="Comma-separated, e.g. returns, orders.",
        widget=forms.TextInput(attrs={"size": 80}),
    )
    # Empty means "detect it from the title and text" (when saving); a code an operator
    # writes is kept as written.
    language = forms.CharField(
        required=False,
        max_length=12,
        widget=forms.TextInput(attrs={"placeholder": DETECT_PLACEHOLDER, "size": 24}),
        help_text="A language code such as en, de or pt-BR. Leave it empty to detect it from "
        "the title and text when saving (en when the text doesn't tell).",
    )

    class Meta:
        model = Article
        fields = ["title", "slug", "body", "url", "tags", "language", "published"]
        widgets = {
            "body": forms.Textarea(
                attrs={
                    "rows": 28,
                    "cols": 100,
                    "style": "font-family: ui-monospace, monospace; width: 100%;",
                    "spellcheck": "true",
                }
            ),
        }
        help_texts = {
            "body": "Markdown. Headings (## …) and paragraphs decide how the article is cut "
            "into passages for answers.",
            "published": "Only published articles are used to answer customers.",
        }
        error_messages = {
            "body": {"required": "Write the article's text: an empty article cannot answer."},
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        initial = kwargs.get("initial") or {}
        super().__init__(*args, **kwargs)
        tags = self.instance.tags if self.instance.pk else self.initial.get("tags", [])
        if isinstance(tags, list):
            self.initial["tags"] = ", ".join(str(tag) for tag in tags)
        if not self.instance.pk and "language" not in initial:
            self.initial["language"] = ""  # a new article's language is detected by default
        # Set by clean(): whether the language was left empty (so detected), and what the
        # text told (None: it didn't tell clearly).
        self.detects_language = False
        self.detected_language: str | None = None

    def clean_body(self) -> str:
        body = str(self.cleaned_data.get("body") or "").replace("\r\n", "\n").replace("\r", "\n")
        if not body.strip():
            raise forms.ValidationError(
                "Write the article's text: an empty article cannot answer.", code="required"
            )
        return body.strip("\n") + "\n"

    def clean_tags(self) -> list[str]:
        raw = str(self.cleaned_data.get("tags") or "")
        return clean_tags(raw.split(","))

    def clean_language(self) -> str:
        language = str(self.cleaned_data.get("language") or "").strip()
        if language and not is_language_code(language):
            raise forms.ValidationError(
                "Use a language code such as en, de or pt-BR, or leave it empty to detect it."
            )
        return language

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        title, body = cleaned.get("title"), cleaned.get("body")
        if not cleaned.get("language") and "language" not in self.errors and title and body:
            # Left empty: the language the title and text are written in; when they don't
            # tell, the article keeps the language it has (a new one: en).
            self.detects_language = True
            self.detected_language = article_language(str(title), str(body))
            fallback = self.instance.language if self.instance.pk else "en"
            cleaned["language"] = self.detected_language or fallback or "en"
        return cleaned


class PassageInline(admin.TabularInline[Passage, Article]):
    """How retrieval cut the article (read-only; rebuilt whenever the article changes)."""

    model = Passage
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["position"]
    fields = readonly_fields = ("position", "heading", "preview", "embedded", "current")
    verbose_name = "passage (how answers see this article)"
    verbose_name_plural = "passages (how answers see this article; rebuilt after each save)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Passage]:
        return super().get_queryset(request).select_related("article")

    @admin.display(description="text")
    def preview(self, passage: Passage) -> str:
        text = passage.text
        return text if len(text) <= PASSAGE_PREVIEW_CHARS else text[:PASSAGE_PREVIEW_CHARS] + "…"

    @admin.display(description="embedded", boolean=True)
    def embedded(self, passage: Passage) -> bool:
        return bool(passage.embedding)

    @admin.display(description="from the current text", boolean=True)
    def current(self, passage: Passage) -> bool:
        return passage.article_hash == passage.article.content_hash

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ExampleQuestionForm(forms.ModelForm[ExampleQuestion]):
    class Meta:
        model = ExampleQuestion
        fields = ["text", "article"]
        widgets = {"text": forms.TextInput(attrs={"size": 90})}
        labels = {"text": "Question"}
        help_texts = {
            "text": "As a customer would ask it, typos and all.",
        }

    def clean_text(self) -> str:
        text = tidy_question(str(self.cleaned_data.get("text") or ""))
        if not text:
            raise forms.ValidationError("Write the question.", code="required")
        if len(text) > EXAMPLE_MAX_CHARS:
            raise forms.ValidationError(f"Keep it under {EXAMPLE_MAX_CHARS} characters.")
        # The key is not a form field, so Django can't check its uniqueness itself.
        same = ExampleQuestion.objects.filter(key=question_key(text)).exclude(pk=self.instance.pk)
        existing = same.select_related("article").first()
        if existing is not None:
            label = existing.article.title if existing.article else "no article (hand over)"
            raise forms.ValidationError(
                f"This question is already an example, answered by {label}: edit that one."
            )
        return text


class ExampleQuestionInline(admin.TabularInline[ExampleQuestion, Article]):
    """Questions this article answers, worded as customers word them."""

    model = ExampleQuestion
    form = ExampleQuestionForm
    extra = 1
    fields = ["text", "source"]
    readonly_fields = ["source"]
    verbose_name = "example question this article answers"
    verbose_name_plural = (
        "example questions this article answers (customers asking something like these get "
        "this article)"
    )


@admin.register(ExampleQuestion)
class ExampleQuestionAdmin(admin.ModelAdmin[ExampleQuestion]):
    """Every example question, including the ones marked unanswerable (no article): questions
    like those are handed over rather than answered."""

    form = ExampleQuestionForm
    list_display = ["text", "answered_by", "source", "embedded", "updated_at"]
    list_filter = [("article", admin.EmptyFieldListFilter), "source", "article"]
    search_fields = ["text", "article__title"]
    autocomplete_fields = ["article"]
    list_select_related = ["article"]
    readonly_fields = ["source", "created_at", "updated_at"]

    @admin.display(description="answered by", ordering="article__title")
    def answered_by(self, example: ExampleQuestion) -> str:
        return example.article.title if example.article else "— nothing: hand over"

    @admin.display(description="embedded", boolean=True)
    def embedded(self, example: ExampleQuestion) -> bool:
        return bool(example.embedding)

    def save_model(
        self, request: HttpRequest, obj: ExampleQuestion, form: Any, change: bool
    ) -> None:
        if not change:
            obj.source = ExampleQuestion.Source.OPERATOR
        super().save_model(request, obj, form, change)
        sync_example_questions_after_commit()


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin[Article]):
    form = ArticleForm
    list_display = ["title", "language", "published", "passage_count", "updated_at", "source"]
    list_filter = ["published", "language"]
    search_fields = ["title", "body", "slug", "tags"]
    ordering = ["title"]  # the must-cite autocomplete pages through it
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["source_file", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["title", "slug", "body"]}),
        ("Details", {"fields": ["url", "tags", "language", "published"]}),
        ("History", {"fields": ["source_file", "created_at", "updated_at"]}),
    ]
    inlines = [ExampleQuestionInline, PassageInline]
    actions = ["publish", "unpublish", "detect_language"]
    save_on_top = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Article]:
        return super().get_queryset(request).annotate(passage_total=Count("passages"))

    @admin.display(description="passages", ordering="passage_total")
    def passage_count(self, article: Article) -> int:
        return int(getattr(article, "passage_total", 0))

    @admin.display(description="ingested from")
    def source_file(self, article: Article) -> str:
        if not article.source:
            return "— (written here: not from a file)"
        return f"{article.source} (running ingest_kb on this file again replaces edits made here)"

    def save_model(self, request: HttpRequest, obj: Article, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        sync_after_commit([obj.pk])
        if getattr(form, "detects_language", False):
            detected = form.detected_language
            self.message_user(
                request,
                f"Language detected from the text: {_language_label(obj.language)}."
                if detected
                else "The text didn't tell its language clearly: "
                f"{_language_label(obj.language)} kept. Enter a code to set it.",
                messages.INFO if detected else messages.WARNING,
            )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        sync_example_questions_after_commit()

    @admin.action(description="Publish the selected articles", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        self._set_published(request, queryset, True)

    @admin.action(description="Unpublish the selected articles", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        self._set_published(request, queryset, False)

    def _set_published(
        self, request: HttpRequest, queryset: QuerySet[Article], published: bool
    ) -> None:
        with transaction.atomic():
            to_change = queryset.exclude(published=published)
            ids = list(to_change.values_list("pk", flat=True))
            # updated_at too: retrieval notices a change by it (QuerySet.update skips auto_now).
            Article.objects.filter(pk__in=ids).update(
                published=published, updated_at=timezone.now()
            )
            sync_after_commit(ids)
        word = "published" if published else "unpublished"
        self.message_user(
            request,
            f"{len(ids)} {'article' if len(ids) == 1 else 'articles'} {word}.",
            messages.SUCCESS,
        )

    @admin.action(
        description="Detect the language of the selected articles from their text",
        permissions=["change"],
    )
    def detect_language(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        """For articles stored before their language was detected, or given a wrong one:
        each gets the language its title and text are written in; one whose text doesn't
        tell keeps its own."""
        changed = unsure = 0
        # The changelist's queryset counts passages (GROUP BY), which can't be locked.
        chosen = Article.objects.filter(pk__in=list(queryset.values_list("pk", flat=True)))
        with transaction.atomic():
            for article in chosen.select_for_update().only("pk", "title", "body", "language"):
                detected = article_language(article.title, article.body)
                if detected is None:
                    unsure += 1
                elif detected != article.language:
                    # updated_at too: retrieval notices a change by it.
                    Article.objects.filter(pk=article.pk).update(
                        language=detected, updated_at=timezone.now()
                    )
                    changed += 1
        text = f"{changed} {'article' if changed == 1 else 'articles'} got a new language."
        if unsure:
            text += f" Kept as it was where the text didn't tell clearly: {unsure}."
        self.message_user(request, text, messages.SUCCESS)


def _language_label(code: str) -> str:
    """ "German (de)", or the code alone for a language without a name here."""
    name = language_name(code)
    return f"{name} ({code})" if name else code
