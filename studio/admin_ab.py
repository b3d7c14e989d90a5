"""The admin of A/B experiments: the list, a change page with the per-arm table, intervals and
verdict, and the Stop / Promote A / Promote B actions (studio.activate_promptversion)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from . import ab
from .models import Experiment, PromptVersion
from .statistics import wilson, z_for


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _number(value: float | None, decimals: int = 1, unit: str = "") -> str:
    return "–" if value is None else f"{value:,.{decimals}f}{unit}"


def _interval(low: float, high: float, percent: bool = False) -> str:
    if percent:
        return f"[{low:.1%}, {high:.1%}]"
    return f"[{low:,.2f}, {high:,.2f}]"


def _mean_interval(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    half = z_for() * sd / len(values) ** 0.5
    return _interval(mean - half, mean + half)


def results_table(report: ab.Report) -> SafeString:
    """The per-arm table (values, 95 % intervals) and each metric's verdict; escaped."""
    a, b, c = report.a, report.b, report.comparisons
    rows: list[tuple[str, str, str, str]] = [
        ("Conversations", str(a.conversations), str(b.conversations), ""),
        (
            "Escalation rate",
            f"{_percent(a.escalation_rate)} "
            f"{_interval(*wilson(a.escalated, a.conversations), percent=True)}",
            f"{_percent(b.escalation_rate)} "
            f"{_interval(*wilson(b.escalated, b.conversations), percent=True)}",
            c["escalation"].verdict,
        ),
        (
            "Resolved without a human",
            f"{_percent(a.resolution_rate)} "
            f"{_interval(*wilson(a.resolved_without_human, a.conversations), percent=True)}",
            f"{_percent(b.resolution_rate)} "
            f"{_interval(*wilson(b.resolved_without_human, b.conversations), percent=True)}",
            c["resolution"].verdict,
        ),
        (
            "CSAT (1-5)",
            f"{_number(a.csat, 2)} {_mean_interval(a.ratings)} ({len(a.ratings)} ratings)",
            f"{_number(b.csat, 2)} {_mean_interval(b.ratings)} ({len(b.ratings)} ratings)",
            c["csat"].verdict,
        ),
        (
            "Tokens per conversation",
            f"{_number(a.tokens_per_conversation, 0)} {_mean_interval(a.tokens)}",
            f"{_number(b.tokens_per_conversation, 0)} {_mean_interval(b.tokens)}",
            c["tokens"].verdict,
        ),
        (
            "Cost per conversation",
            _number(a.cost_per_conversation, 6),
            _number(b.cost_per_conversation, 6),
            c["cost"].verdict,
        ),
        (
            "Reply latency (median / p90)",
            f"{_number(a.latency_median, 0, ' ms')} / {_number(a.latency_p90, 0, ' ms')}",
            f"{_number(b.latency_median, 0, ' ms')} / {_number(b.latency_p90, 0, ' ms')}",
            c["latency"].verdict,
        ),
    ]
    body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="ab-results"><thead><tr><th>Metric</th><th>A: {}</th><th>B: {}</th>'
        "<th>Verdict (95% confidence)</th></tr></thead><tbody>{}</tbody></table>"
        '<p class="ab-recommendation"><strong>{}</strong></p>',
        str(a.version),
        str(b.version),
        body,
        report.recommendation,
    )


class StartExperimentForm(forms.ModelForm[Experiment]):
    """Starting one: A is the active version; the checks are the workflow's."""

    class Meta:
        model = Experiment
        fields = ["name", "version_b", "percent_b"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["version_b"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = PromptVersion.objects.filter(
            state=PromptVersion.State.PUBLISHED, is_active=False
        )
        self.fields["name"].required = False

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("version_b") is not None and data.get("percent_b") is not None:
            try:
                ab.check_start(data["version_b"], data["percent_b"])
            except ValidationError as error:
                raise forms.ValidationError(error.messages) from error
        return data


class ExperimentAdmin(admin.ModelAdmin[Experiment]):
    list_display = ("name", "status", "arms", "percent_b", "started_at", "stopped_at")
    list_filter = ("status",)
    actions = ["stop", "promote_a", "promote_b"]

    def arms(self, obj: Experiment) -> str:
        return f"A: {obj.version_a} / B: {obj.version_b}"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        return super().get_queryset(request).select_related("version_a", "version_b")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = StartExperimentForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "version_b", "percent_b"]
        return [
            "name",
            "status",
            "version_a",
            "version_b",
            "percent_b",
            "started_by",
            "started_at",
            "stopped_at",
            "results",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        fixed = ["status", "version_a", "version_b", "started_by", "started_at", "stopped_at"]
        if obj.status != Experiment.Status.RUNNING:
            fixed += ["name", "percent_b"]
        return [*fixed, "results"]

    @admin.display(description="Results")
    def results(self, obj: Experiment) -> SafeString:
        return results_table(ab.metrics(obj))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self.has_activate_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of what was tried stays

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ab.ACTIVATE_PERMISSION)

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        started = ab.start_experiment(obj.version_b, obj.percent_b, request.user, obj.name)
        obj.__dict__.update({k: v for k, v in started.__dict__.items() if k != "_state"})
        obj._state.adding = False

    def _run(self, request: HttpRequest, queryset: QuerySet[Experiment], step: Any) -> None:
        for experiment in queryset:
            try:
                message = step(experiment)
            except (ValidationError, PermissionDenied) as error:
                messages.error(request, " ".join(getattr(error, "messages", [str(error)])))
            else:
                messages.success(request, message)

    @admin.action(description="Stop the selected experiments", permissions=["activate"])
    def stop(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        def step(experiment: Experiment) -> str:
            ab.stop_experiment(experiment, request.user, "Stopped from the admin")
            return f"Stopped {experiment.name}."

        self._run(request, queryset, step)

    def _promote(self, request: HttpRequest, queryset: QuerySet[Experiment], arm: str) -> None:
        if queryset.count() != 1:
            messages.error(request, "Select exactly one experiment to promote its winner.")
            return

        def step(experiment: Experiment) -> str:
            version = ab.promote(
                experiment, arm, request.user, f"Promoted arm {arm.upper()} from the admin"
            )
            return f"{version} is now the active version."

        self._run(request, queryset, step)

    @admin.action(description="Promote A (stop, keep A active)", permissions=["activate"])
    def promote_a(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._promote(request, queryset, "a")

    @admin.action(description="Promote B (stop, make B active)", permissions=["activate"])
    def promote_b(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._promote(request, queryset, "b")


# The experiments' admin lives here (its owner); replace a plain registration if any.
if admin.site.is_registered(Experiment):
    admin.site.unregister(Experiment)
admin.site.register(Experiment, ExperimentAdmin)
