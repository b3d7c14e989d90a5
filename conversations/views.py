from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .models import Conversation
from .visitors import remember_visitor, visitor_id_from_request


@require_GET
@never_cache
def chat(request: HttpRequest) -> HttpResponse:
    """The chat page: the visitor's current conversation, or with ?conversation=<id> one of
    their earlier ones (anyone else's is a 404, as is an unknown id)."""
    requested = request.GET.get("conversation")
    visitor_id = visitor_id_from_request(request)
    is_new = visitor_id is None
    if requested:
        if visitor_id is None:
            raise Http404("No such conversation.")
        conversation_id = _own_conversation(visitor_id, requested).pk
    else:
        # Nothing is stored for a visitor until they write (services.store_conversation).
        visitor_id = visitor_id or services.new_visitor_id()
        conversation_id = services.page_conversation_id(visitor_id)
    embedded = request.GET.get("embed") == "1"
    response = render(
        request,
        "conversations/chat.html",
        {
            "conversation_id": str(conversation_id),
            "ws_path": f"/ws/chat/{conversation_id}/",
            "company_name": settings.COMPANY_NAME,
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "embedded": embedded,
        },
    )
    if embedded:
        # The widget shows this page in an iframe on the customer's own site.
        response.xframe_options_exempt = True  # type: ignore[attr-defined]
    if is_new:
        remember_visitor(response, visitor_id)
    return response


def _own_conversation(visitor_id: uuid.UUID, conversation_id: str) -> Conversation:
    try:
        return services.open_conversation(visitor_id, conversation_id)
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
    visitor_id = visitor_id_from_request(request)
    if visitor_id is None:
        return _unknown_visitor()
    conversations = selectors.previous_conversations(visitor_id)
    for item in conversations:
        item["url"] = _chat_url(request, item["id"])
    return JsonResponse({"conversations": conversations})


@require_POST
@never_cache
@_json_csrf_protect
def new_conversation(request: HttpRequest) -> HttpResponse:
    """POST /chat/conversations/new/: start a new conversation (CSRF-protected); it is stored
    with its first message."""
    visitor_id = visitor_id_from_request(request)
    if visitor_id is None:
        return _unknown_visitor()
    conversation_id = str(services.start_new_conversation(visitor_id))
    return JsonResponse(
        {
            "conversation": {"id": conversation_id, "status": Conversation.Status.OPEN},
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
    """Liveness: the process answers. It reads neither the database nor Redis, so an outage of
    either (which /readyz reports) never gets every web process restarted, and never hangs."""
    return JsonResponse({"status": "ok"})
