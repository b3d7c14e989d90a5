from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import services
from .redis_clients import sync_client
from .visitors import remember_visitor, visitor_id_from_request


@require_GET
@never_cache
def chat(request: HttpRequest) -> HttpResponse:
    customer, is_new = services.customer_for_visitor(visitor_id_from_request(request))
    conversation = services.current_conversation(customer)
    embedded = request.GET.get("embed") == "1"
    response = render(
        request,
        "conversations/chat.html",
        {
            "conversation_id": str(conversation.pk),
            "ws_path": f"/ws/chat/{conversation.pk}/",
            "company_name": settings.COMPANY_NAME,
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "embedded": embedded,
        },
    )
    if embedded:
        # The widget shows this page in an iframe on the customer's own site.
        response.xframe_options_exempt = True  # type: ignore[attr-defined]
    if is_new:
        remember_visitor(response, customer.pk)
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("chat")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    sync_client().ping()
    return JsonResponse({"status": "ok"})
