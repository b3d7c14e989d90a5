from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from bot.wording import wording_for

from . import embedding, links, selectors, services
from .availability import customer_availability
from .first_screen import first_screen, visitor_language
from .models import Conversation
from .visitors import remember_visitor
from .visitors import visitor_id_from_request as _cookie_visitor


@require_GET
@never_cache
def chat(request: HttpRequest) -> HttpResponse:
    """The chat page: the visitor's current conversation, or with ?conversation=<id> one of
    their earlier ones (anyone else's is a 404, as is an unknown id). With ?embed=1 it is the
    widget's iframe page (widget_page)."""
    if request.GET.get("embed") == "1":
        return widget_page(request)
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
    response = _chat_page(
        request,
        conversation_id=str(conversation_id),
        ws_path=f"/ws/chat/{conversation_id}/",
        embedded=False,
    )
    if is_new:
        remember_visitor(response, visitor_id)
    return response


def widget_page(request: HttpRequest) -> HttpResponse:
    """The widget's iframe page, framed by another site. It knows no visitor: a third-party
    iframe keeps no cookie, so the page's script presents the visitor token it keeps in its
    own storage on the socket (/ws/widget/), which answers with the conversation. `site` is
    the host page's origin as the loader saw it; the browser enforces the same list through
    frame-ancestors, so a site not allowed gets this refusal or a blocked frame, never a chat."""
    site = request.GET.get("site", "")
    if not embedding.may_embed(site):
        response = render(
            request,
            "conversations/widget_refused.html",
            {"company_name": settings.COMPANY_NAME, "site": site[:200]},
            status=403,
        )
    else:
        response = _chat_page(
            request,
            conversation_id=request.GET.get("conversation", "")[:64],
            ws_path="/ws/widget/",
            embedded=True,
            site=embedding.normalise_origin(site),
        )
    # Only this page may be framed: the chat only by the allowed sites; the refusal, which
    # holds nothing, by any, so that the site's operator reads why instead of a blank frame.
    response.xframe_options_exempt = True  # type: ignore[attr-defined]
    response["Content-Security-Policy"] = (
        embedding.frame_ancestors() if response.status_code == 200 else "frame-ancestors *"
    )
    return response


def _chat_page(
    request: HttpRequest, *, conversation_id: str, ws_path: str, embedded: bool, site: str = ""
) -> HttpResponse:
    return render(
        request,
        "conversations/chat.html",
        {
            "conversation_id": conversation_id,
            "ws_path": ws_path,
            "company_name": settings.COMPANY_NAME,
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "embedded": embedded,
            "site": site,
            # Shown until the first message (chat.js); viewing it stores nothing.
            "first_screen": first_screen(
                visitor_language(request.headers.get("Accept-Language", ""))
            ),
        },
    )


def _own_conversation(visitor_id: uuid.UUID, conversation_id: str) -> Conversation:
    try:
        return services.open_conversation(visitor_id, conversation_id)
    except (selectors.ConversationNotFound, selectors.NotYourConversation):
        # Someone else's conversation looks exactly like one that doesn't exist.
        raise Http404("No such conversation.") from None


@require_GET
@never_cache
def continue_conversation(request: HttpRequest, token: str) -> HttpResponse:
    """/chat/continue/<token>/, the link in an email (links.py): this browser becomes the
    conversation's customer (their visitor cookie) and opens that conversation. The redirect
    drops the token from the address bar and history."""
    try:
        conversation = links.conversation_from_token(token)
    except links.LinkRefused as refused:
        response = render(
            request,
            "conversations/link_refused.html",
            {
                "title": refused.title,
                "message": refused.message,
                "company_name": settings.COMPANY_NAME,
            },
            status=refused.status,
        )
        # django.request logs every 4xx with its path, which holds the token.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    response = redirect(f"{reverse('chat')}?conversation={conversation.pk}")
    remember_visitor(response, conversation.customer_id)
    response["Referrer-Policy"] = "no-referrer"
    return response


# --- The returning customer's conversations (JSON) ---------------------------------------------


VISITOR_HEADER = "X-Support-Bot-Visitor"


def visitor_id_from_request(request: HttpRequest) -> uuid.UUID | None:
    """The visitor: the widget's token header (a third-party iframe has no cookie), else the
    first-party page's cookie."""
    if VISITOR_HEADER in request.headers:
        return embedding.visitor_from_token(request.headers[VISITOR_HEADER])
    return _cookie_visitor(request)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _unknown_visitor() -> JsonResponse:
    return _error(401, "unauthenticated", "Your chat session has expired. Please reload the page.")


def _json_csrf_protect(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's CSRF check, answered in JSON (the default failure page is HTML). A request
    that names its visitor in the widget's token header carries no ambient credential, so
    another site cannot forge it: it needs no CSRF token."""

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if VISITOR_HEADER in request.headers:
            return view(request, *args, **kwargs)
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
    if request.GET.get("embed") != "1":
        return url
    return url + "&" + urlencode({"embed": "1", "site": request.GET.get("site", "")})


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
@never_cache
def team_availability(request: HttpRequest) -> HttpResponse:
    """GET /chat/availability/?lang=de: whether the team answers now, for the chat page to
    refresh its header (docs/widget.md). Anyone may ask: it says nothing about a visitor."""
    return JsonResponse(customer_availability(wording_for(request.GET.get("lang", "")[:12])))


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("chat")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. It reads neither the database nor Redis, so an outage of
    either (which /readyz reports) never gets every web process restarted, and never hangs."""
    return JsonResponse({"status": "ok"})
