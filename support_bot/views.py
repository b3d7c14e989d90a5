"""Project-wide views: the CSRF failure, answered in JSON to the agent API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as html_csrf_failure

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
