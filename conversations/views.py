from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from support_bot.redis_clients import sync_client

from . import selectors, services
from .models import Conversation, Customer
from .visitors import remember_visitor, visitor_id_from_request


@require_GET
@never_cache
def chat(request: HttpRequest) -> HttpResponse:
    """The chat page: the visitor's current conversation, or with ?conversation=<id> one of
    their earlier ones (anyone else's is a 404, as is an unknown id)."""
    requested = request.GET.get("conversation")
    if requested:
        customer = services.known_customer(visitor_id_from_request(request))
        if customer is None:
            raise Http404("No such conversation.")
        conversation = _own_conversation(customer, requested)
        is_new = False
    else:
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


def _own_conversation(customer: Customer, conversation_id: str) -> Conversation:
    try:
        return selectors.conversation_for_customer(customer.pk, conversation_id)
    except (selectors.ConversationNotFound, selectors.NotYourConversation):
        # Someone else's conversation looks exactly like one that doesn't exist.
        raise Http404("No such conversation.") from None


# --- The returning customer's conversations (JSON) ---------------------------------------------


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _unknown_visitor() -> JsonResponse:
    return _error(401, "unauthenticated", "Your chat session has expired. Please reload the page.")


def _json_csrf_protect(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's CSRF check, answered in JSON (the default failure page is HTML)."""

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = CsrfViewMiddleware(lambda _: HttpResponse()).process_view(
            request, view, args, kwargs
        )
        if refused is not None:
            return _error(
                403, "csrf_failed", "Your chat page is out of date. Please reload the page."
            )
        return view(request, *args, **kwargs)

    return csrf_exempt(checked)


def _chat_url(request: HttpRequest, conversation_id: str) -> str:
    url = f"{reverse('chat')}?conversation={conversation_id}"
    return url + "&embed=1" if request.GET.get("embed") == "1" else url


@require_GET
@never_cache
def conversation_list(request: HttpRequest) -> HttpResponse:
    """GET /chat/conversations/: the visitor's own conversations, most recent first."""
    customer = services.known_customer(visitor_id_from_request(request))
    if customer is None:
        return _unknown_visitor()
    conversations = selectors.previous_conversations(customer)
    for item in conversations:
        item["url"] = _chat_url(request, item["id"])
    return JsonResponse({"conversations": conversations})


@require_POST
@never_cache
@_json_csrf_protect
def new_conversation(request: HttpRequest) -> HttpResponse:
    """POST /chat/conversations/new/: start a new conversation (CSRF-protected)."""
    customer = services.known_customer(visitor_id_from_request(request))
    if customer is None:
        return _unknown_visitor()
    conversation = services.start_new_conversation(customer)
    conversation_id = str(conversation.pk)
    return JsonResponse(
        {
            "conversation": {"id": conversation_id, "status": conversation.status},
            "url": _chat_url(request, conversation_id),
        },
        status=201,
    )


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
