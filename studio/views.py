"""The prompt studio's pages for operators: the playground and evaluations. Thin: check the
user, call one service. Login first (the admin's), then 403 without the permission."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from conversations.models import Conversation

from . import evaluation, services
from .models import EvalRun, PromptVersion, TestSet
from .provider_notice import offline_notice

View = Callable[..., HttpResponse]

USE_PLAYGROUND = "studio.use_playground"
RUN_EVALUATION = "studio.run_evaluation"
PERMISSION_TEXT = {
    USE_PLAYGROUND: "use the playground",
    RUN_EVALUATION: "run evaluations",
    "studio.add_testcase": "add test cases",
}


def operator_page(*permissions: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            for permission in permissions:
                if not request.user.has_perm(permission):
                    text = PERMISSION_TEXT.get(permission, permission)
                    return render(
                        request,
                        "inbox/forbidden.html",
                        {"message": f"You don't have permission to {text}."},
                        status=403,
                    )
            return view(request, *args, **kwargs)

        return never_cache(wrapped)

    return decorate


def _versions() -> list[dict[str, Any]]:
    return [
        {
            "id": v.pk,
            "label": f"{v.name} (#{v.pk}, {v.get_state_display().lower()}"
            + (", active" if v.is_active else "")
            + ")",
            "is_active": v.is_active,
            "offline_notice": offline_notice(v.provider),
        }
        for v in PromptVersion.objects.order_by("-is_active", "-created_at")
    ]


@require_GET
@operator_page(USE_PLAYGROUND)
def playground_page(request: HttpRequest) -> HttpResponse:
    versions = _versions()
    selected = next((v for v in versions if v["is_active"]), versions[0] if versions else None)
    return render(
        request,
        "studio/playground.html",
        {
            "versions": versions,
            # The selected version's (studio/offline_notice.js follows the select); with no
            # version at all the built-in default answers, as configured.
            "offline_notice": selected["offline_notice"] if selected else offline_notice(""),
            "ws_path": "/ws/studio/",
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "conversation_id": request.GET.get("conversation", "")[:64],
        },
    )


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}"


@require_GET
@operator_page(RUN_EVALUATION)
def evaluations_page(request: HttpRequest) -> HttpResponse:
    run = None
    comparison = None
    baseline = None
    run_id = _int(request.GET.get("run"))
    if run_id:
        run = EvalRun.objects.select_related("version", "test_set").filter(pk=run_id).first()
    if run is not None and run.status == EvalRun.Status.DONE:
        baseline = evaluation.baseline_for(run)
        comparison = evaluation.compare(run, baseline)
        for row in comparison["scores"]:
            row["score_text"] = _pct(row["score"])
            row["baseline_text"] = _pct(row["baseline"])
            row["delta_text"] = "" if row["delta"] is None else f"{row['delta']:+.2f}"
    versions = _versions()
    chosen = [v for v in versions if run is not None and v["id"] == run.version_id]
    return render(
        request,
        "studio/evaluations.html",
        {
            "versions": versions,
            # Scores of the offline answerer say nothing of a prompt (studio/offline_notice.js).
            "offline_notice": (chosen or versions or [{"offline_notice": ""}])[0]["offline_notice"],
            "test_sets": list(TestSet.objects.values("id", "name")),
            "run": run,
            "baseline": baseline,
            "comparison": comparison,
            "recent": EvalRun.objects.select_related("version", "test_set")[:10],
            "ws_path": "/ws/studio/",
            "error": request.GET.get("error", "")[:200],
            "added": request.GET.get("added", "")[:20],
            "can_add_case": request.user.has_perm("studio.add_testcase"),
        },
    )


def _back(**params: Any) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{reverse('studio:evaluations')}?{urlencode(params)}")


_ID = re.compile(r"[0-9]{1,18}")


def _int(value: Any) -> int:
    """A row id from a form or query string, else 0 (no row). str.isdigit() would take "²",
    which int() refuses."""
    return int(value) if isinstance(value, str) and _ID.fullmatch(value) else 0


@require_POST
@operator_page(RUN_EVALUATION)
def start_run(request: HttpRequest) -> HttpResponse:
    version = PromptVersion.objects.filter(pk=_int(request.POST.get("version"))).first()
    test_set = TestSet.objects.filter(pk=_int(request.POST.get("test_set"))).first()
    if version is None or test_set is None:
        return _back(error="Pick a version and a test set.")
    try:
        run = services.start_run(version, test_set, request.user)
    except evaluation.EvaluationError as error:
        return _back(error=str(error))
    return _back(run=run.pk)


@require_POST
@operator_page(RUN_EVALUATION, "studio.add_testcase")
def add_conversation(request: HttpRequest) -> HttpResponse:
    test_set = TestSet.objects.filter(pk=_int(request.POST.get("test_set"))).first()
    try:
        conversation = Conversation.objects.get(pk=UUID(request.POST.get("conversation", "")))
    except (ValueError, Conversation.DoesNotExist):
        return _back(error="There is no conversation with that id.")
    if test_set is None:
        return _back(error="Pick a test set.")
    try:
        case = evaluation.case_from_conversation(conversation, test_set)
    except evaluation.EvaluationError as error:
        return _back(error=str(error))
    return _back(added=case.pk)
