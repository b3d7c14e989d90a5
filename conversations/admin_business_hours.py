"""Business hours in the admin as one weekly grid (Mon–Sun, open or closed, up to two opening
periods a day, in SUPPORT_TIME_ZONE shown plainly) instead of one row per form. Saved as a
whole week in one transaction (business_hours.replace_week)."""

from __future__ import annotations

from datetime import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone

from . import business_hours
from .models import BusinessHours

# Two periods a day covers a lunch break; a day stored with more rows gets more (see below).
RANGES_PER_DAY = 2
TIME_WIDGET = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")


def _field(day: int, kind: str, n: int) -> str:
    return f"d{day}_{kind}{n}"


class WeekGridForm(forms.Form):
    always_open = forms.BooleanField(
        required=False,
        label="Always open (people answer around the clock; the days below are ignored)",
    )

    def __init__(self, *args: Any, ranges: int = RANGES_PER_DAY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranges = ranges
        for day, name in BusinessHours.Weekday.choices:
            self.fields[f"d{day}_open"] = forms.BooleanField(required=False, label=f"{name} open")
            for n in range(1, ranges + 1):
                for kind, text in (("opens", "opens"), ("closes", "closes")):
                    self.fields[_field(day, kind, n)] = forms.TimeField(
                        required=False,
                        label=f"{name} period {n} {text}",
                        widget=TIME_WIDGET,
                        input_formats=["%H:%M", "%H:%M:%S"],
                    )

    @classmethod
    def from_rows(cls, rows: list[BusinessHours]) -> WeekGridForm:
        """The grid filled from the stored rows (none: always open)."""
        per_day: dict[int, list[BusinessHours]] = {}
        for row in rows:
            per_day.setdefault(row.weekday, []).append(row)
        ranges = max([RANGES_PER_DAY, *(len(v) for v in per_day.values())])
        initial: dict[str, Any] = {"always_open": not rows}
        for day, periods in per_day.items():
            initial[f"d{day}_open"] = True
            for n, row in enumerate(sorted(periods, key=lambda r: r.opens), start=1):
                initial[_field(day, "opens", n)] = row.opens
                initial[_field(day, "closes", n)] = row.closes
        return cls(initial=initial, ranges=ranges)

    def days(self) -> list[dict[str, Any]]:
        """The bound fields row by row, for the template."""
        return [
            {
                "name": name,
                "open": self[f"d{day}_open"],
                "periods": [
                    (self[_field(day, "opens", n)], self[_field(day, "closes", n)])
                    for n in range(1, self.ranges + 1)
                ],
                "errors": self.errors.get(f"d{day}_open"),
            }
            for day, name in BusinessHours.Weekday.choices
        ]

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        periods: list[tuple[int, time, time]] = []
        if data.get("always_open"):
            data["periods"] = periods
            return data
        for day, name in BusinessHours.Weekday.choices:
            if not data.get(f"d{day}_open"):
                continue  # a closed day's times are ignored, not stored
            spans: list[tuple[time, time]] = []
            for n in range(1, self.ranges + 1):
                opens = data.get(_field(day, "opens", n))
                closes = data.get(_field(day, "closes", n))
                if opens is None and closes is None:
                    continue
                if opens is None or closes is None:
                    self.add_error(
                        f"d{day}_open", f"{name}: give both the opening and the closing time."
                    )
                elif closes <= opens:
                    self.add_error(
                        f"d{day}_open",
                        f"{name}: closes at {closes:%H:%M}, not after it opens at {opens:%H:%M}.",
                    )
                else:
                    spans.append((opens, closes))
            if not spans and not self.has_error(f"d{day}_open"):
                self.add_error(f"d{day}_open", f"{name} is open: give its opening hours.")
            spans.sort()
            for (o1, c1), (o2, c2) in zip(spans, spans[1:], strict=False):
                if o2 < c1:
                    self.add_error(
                        f"d{day}_open",
                        f"{name}: {o1:%H:%M}–{c1:%H:%M} and {o2:%H:%M}–{c2:%H:%M} overlap.",
                    )
            periods.extend((day, opens, closes) for opens, closes in spans)
        if not periods and not self.errors:
            # No rows means always open: an all-closed week would silently mean the opposite.
            raise forms.ValidationError(
                "Every day is closed. Open at least one day, or tick “Always open”.",
                code="no_open_day",
            )
        data["periods"] = periods
        return data


def _ranges(value: Any) -> int:
    """The grid's number of periods a day, as posted (bounded), else the default."""
    text = str(value or "")
    if text.isascii() and text.isdigit() and 0 < int(text) <= 8:
        return int(text)
    return RANGES_PER_DAY


def week_grid_view(
    model_admin: admin.ModelAdmin[BusinessHours], request: HttpRequest
) -> HttpResponse:
    """BusinessHoursAdmin's list page: the grid; saving needs the add, change and delete
    permissions (the week replaces every row)."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    can_edit = all(
        check(request)
        for check in (
            model_admin.has_add_permission,
            model_admin.has_change_permission,
            model_admin.has_delete_permission,
        )
    )
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied
        form = WeekGridForm(request.POST, ranges=_ranges(request.POST.get("ranges")))
        if form.is_valid():
            business_hours.replace_week(form.cleaned_data["periods"])
            model_admin.message_user(request, "The business hours are saved.", messages.SUCCESS)
            return HttpResponseRedirect(request.path)
    else:
        form = WeekGridForm.from_rows(list(BusinessHours.objects.all()))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": BusinessHours._meta,
        "title": "Business hours",
        "form": form,
        "can_edit": can_edit,
        "time_zone": str(settings.SUPPORT_TIME_ZONE),
        "now_there": timezone.localtime(timezone=business_hours.support_zone()),
    }
    return TemplateResponse(request, "admin/conversations/businesshours/week_grid.html", context)
