"""Project-wide views: the CSRF failure, answered in JSON to the agent API; readiness and
metrics for the deployment (docs/operations.md)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as html_csrf_failure
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import metrics as metrics_
from . import readiness

# The agent API's endpoints (inbox/urls.py under agent/): they answer JSON only (docs/inbox.md).
JSON_API_PREFIX = "/agent/api/"


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the agent API's JSON error ({"error", "code"}) for its endpoints and
    for requests that accept only JSON; Django's page everywhere else."""
    if request.path.startswith(JSON_API_PREFIX) or request.headers.get("Accept", "").startswith(
        "application/json"
    ):
        return JsonResponse(
            {
                "error": "Your page is out of date or its security token is missing. "
                "Please reload the page.",
                "code": "csrf_failed",
            },
            status=403,
        )
    return html_csrf_failure(request, reason)


@require_GET
@never_cache
async def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when the database, Redis and the broker answer, else 503 saying which
    don't. (/healthz is liveness.)"""
    checks = await readiness.run_checks()
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


@require_GET
@never_cache
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for a bearer of METRICS_TOKEN only (off while it is unset)."""
    if not metrics_.token_matches(request.headers.get("Authorization", "")):
        return JsonResponse(
            {"error": "Metrics need the bearer token METRICS_TOKEN.", "code": "unauthorized"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    # Off the event loop and off the shared sync thread: the queue depths ask the broker.
    body, content_type = await sync_to_async(metrics_.web_exposition, thread_sensitive=False)()
    return HttpResponse(body, content_type=content_type)
