"""The agent workspace's pages and JSON endpoints. Thin: check the user, call one service.

Endpoints answer JSON only: 401 {"error"} without a staff login, 403 {"error"} without the
permission, 400/404/409 {"error","code"} for a refused transition (409 with "taken_by" when
another agent owns the conversation). POSTs need the CSRF token (X-CSRFToken header).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import attachments
from conversations.models import Conversation, display_name

from . import away as away_setting
from . import events, notify, presence, selectors, services
from .models import CannedResponse

View = Callable[..., HttpResponse]

PERMISSION_TEXT = {
    services.WORK_INBOX: "work the agent inbox",
    services.WRITE_NOTE: "write internal notes",
    services.RESOLVE: "snooze, resolve or reopen conversations",
}


def _forbidden_message(permission: str) -> str:
    return f"You don't have permission to {PERMISSION_TEXT.get(permission, permission)}."


def agent_page(permission: str = services.WORK_INBOX) -> Callable[[View], View]:
    """A page: log in first (the admin's login), then 403 without the permission."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            if not request.user.has_perm(permission):
                return render(
                    request,
                    "inbox/forbidden.html",
                    {"message": _forbidden_message(permission)},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return never_cache(wrapped)

    return decorate


def agent_api(permission: str) -> Callable[[View], View]:
    """A JSON endpoint: 401/403 as JSON, refused transitions as their JSON error."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return JsonResponse({"error": "Please log in as staff."}, status=401)
            if not request.user.has_perm(permission):
                return JsonResponse({"error": _forbidden_message(permission)}, status=403)
            try:
                return view(request, *args, **kwargs)
            except services.InboxError as error:
                return JsonResponse(error.as_dict(), status=error.status)

        return never_cache(wrapped)

    return decorate


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, RecursionError):  # RecursionError: nested far too deep
        raise services.Invalid("Send a JSON object.") from None
    if not isinstance(data, dict):
        raise services.Invalid("Send a JSON object.")
    try:
        # JSON's \\ud800 escapes decode to lone surrogates, which no database can store.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise services.Invalid("The text is not valid Unicode (a broken character).") from None
    return data


def _row(conversation: Conversation) -> JsonResponse:
    return JsonResponse({"ok": True, "row": events.row_for(conversation.pk)})


# --- Pages ------------------------------------------------------------------------------------


def _page_context(request: HttpRequest) -> dict[str, Any]:
    user: Any = request.user
    return {
        "me": {"id": user.pk, "name": display_name(user)},
        "away": presence.is_away(user.pk),
        "ws_path": "/ws/inbox/",
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "company_name": settings.COMPANY_NAME,
        "attachment_max_bytes": settings.ATTACHMENT_MAX_BYTES,
        "attachment_max_files": settings.ATTACHMENT_MAX_FILES,
    }


@require_GET
@agent_page()
def inbox_page(request: HttpRequest) -> HttpResponse:
    filters = {
        "agents": services.assignable_agents(),
        "labels": selectors.labels(),
        "ratings": range(1, 6),
    }
    return render(request, "inbox/inbox.html", {**_page_context(request), **filters})


@require_GET
@agent_page()
def conversation_page(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return render(
            request,
            "inbox/forbidden.html",
            {"message": "This conversation does not exist.", "title": "Not found"},
            status=404,
        )
    user: Any = request.user
    canned = list(CannedResponse.objects.values("shortcut", "title", "text"))
    return render(
        request,
        "inbox/conversation.html",
        {
            **_page_context(request),
            "conversation_id": str(conversation.pk),
            "canned": canned,
            "agents": services.assignable_agents(),
            "can_note": user.has_perm(services.WRITE_NOTE),
            "can_resolve": user.has_perm(services.RESOLVE),
            # The admin's readable transcript, only for staff the admin would let in.
            "can_view_transcript": user.is_staff
            and user.has_perm("conversations.view_conversation"),
        },
    )


# --- JSON endpoints ---------------------------------------------------------------------------


@require_GET
@agent_api(services.WORK_INBOX)
def inbox_rows(request: HttpRequest) -> HttpResponse:
    """?view=&status=&assignee=&label=&rating=&from=&to=&q=&cursor=&limit=&id= (docs/inbox.md)."""
    return JsonResponse(services.inbox_rows(request.user, request.GET.dict()))


@require_GET
@agent_api(services.WORK_INBOX)
def labels(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"labels": selectors.labels()})


@require_http_methods(["GET", "POST", "DELETE"])
@agent_api(services.WORK_INBOX)
def conversation_labels(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """GET the labels; POST {"label": id or name} adds one, DELETE {"label"} removes it."""
    if request.method == "GET":
        return JsonResponse({"labels": services.conversation_labels(conversation_id)})
    change = services.add_label if request.method == "POST" else services.remove_label
    return JsonResponse(
        {"labels": change(conversation_id, request.user, _body(request).get("label"))}
    )


@require_GET
@agent_api(services.WORK_INBOX)
def canned_responses(request: HttpRequest) -> HttpResponse:
    canned = list(CannedResponse.objects.values("shortcut", "title", "text"))
    return JsonResponse({"canned": canned})


@require_POST
@agent_api(services.WORK_INBOX)
def take_over(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _row(services.take_over(conversation_id, request.user))


@require_POST
@agent_api(services.WORK_INBOX)
def assign(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    user_id = _body(request).get("user_id")
    if type(user_id) is not int:
        raise services.Invalid("assign needs user_id (a number).")
    return _row(services.assign(conversation_id, request.user, user_id))


@require_POST
@agent_api(services.WORK_INBOX)
def hand_back(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _row(services.hand_back_to_bot(conversation_id, request.user))


@require_POST
@agent_api(services.WORK_INBOX)
def reply(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    turn = services.agent_reply(conversation_id, request.user, _body(request).get("text"))
    return JsonResponse({"ok": True, "turn": turn.as_event()}, status=201)


@require_POST
@agent_api(services.WORK_INBOX)
def attach(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """Multipart: one or more `file`s and an optional `text`, sent as one reply."""
    try:
        files = attachments.validate(request.FILES.getlist("file"))
    except attachments.AttachmentRefused as refused:
        return JsonResponse({"error": refused.message, "code": refused.code}, status=refused.status)
    if not files:
        raise services.Invalid("Please choose a file to attach.")
    text = request.POST.get("text", "")
    turn = services.agent_reply(conversation_id, request.user, text, files)
    return JsonResponse({"ok": True, "turn": turn.as_event()}, status=201)


@require_POST
@agent_api(services.WRITE_NOTE)
def note(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    created = services.add_note(conversation_id, request.user, _body(request).get("text"))
    return JsonResponse({"ok": True, "note": events.note_event(created)}, status=201)


@require_POST
@agent_api(services.RESOLVE)
def snooze(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    body = _body(request)
    until = services.parse_until(body.get("until", body.get("minutes")))
    return _row(services.snooze(conversation_id, request.user, until))


@require_POST
@agent_api(services.RESOLVE)
def resolve(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _row(services.resolve(conversation_id, request.user))


@require_POST
@agent_api(services.RESOLVE)
def reopen(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _row(services.reopen(conversation_id, request.user))


@require_POST
@agent_api(services.WORK_INBOX)
def mark_read(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    services.mark_read(conversation_id, request.user)
    return JsonResponse({"ok": True})


@require_POST
@agent_api(services.WORK_INBOX)
def assist(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    queued = services.request_assist(conversation_id, request.user, _body(request).get("kind"))
    return JsonResponse({"ok": True, "queued": queued.kind}, status=202)


@require_POST
@agent_api(services.WORK_INBOX)
def set_away(request: HttpRequest) -> HttpResponse:
    away = _body(request).get("away")
    if type(away) is not bool:
        raise services.Invalid("Send away: true or false.")
    return JsonResponse({"ok": True, "away": away_setting.set_away(request.user, away)})


@require_GET
@agent_api(services.WORK_INBOX)
def notifications(request: HttpRequest) -> HttpResponse:
    """What static/inbox/notify.js opens with: unread conversation ids and the away setting."""
    user: Any = request.user
    return JsonResponse(
        {"unread": notify.unread_conversation_ids(user), "away": presence.is_away(user.pk)}
    )
