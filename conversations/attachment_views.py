"""Attachments over HTTP (docs/attachments.md): a customer's upload, and every attached file,
served only to the conversation's customer and the team. Thin: check, call one service."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from support_bot.redis_clients import key, sync_client

from . import attachments, context, protocol, selectors, services
from .models import Conversation
from .views import _error, _json_csrf_protect, _unknown_visitor, visitor_id_from_request

# Besides the files: the text and the form's other fields.
_FORM_SLACK_BYTES = 64 * 1024


def _refuse_large_bodies(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """413 for a body larger than the most files a message may carry, before anything reads
    it (the CSRF check reads the form, and Django spools uploaded files to disk)."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limit = settings.ATTACHMENT_MAX_FILES * settings.ATTACHMENT_MAX_BYTES + _FORM_SLACK_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return _error(
                413,
                "file_too_large",
                f"Files may be at most {settings.ATTACHMENT_MAX_BYTES // (1024 * 1024)} MB each.",
            )
        return view(request, *args, **kwargs)

    return checked


@require_POST
@_refuse_large_bodies
@_json_csrf_protect
def upload(request: HttpRequest) -> HttpResponse:
    """POST /chat/attachments/ (multipart): `conversation`, `client_id`, `text` (optional) and
    one or more `file`s. Stores one customer message with its files, like a `message` frame
    on the socket (the same client id is stored once), and answers with its `ack` and `turn`."""
    visitor_id = visitor_id_from_request(request)
    if visitor_id is None:
        return _unknown_visitor()
    try:
        conversation = services.open_conversation(visitor_id, request.POST.get("conversation", ""))
    except (selectors.ConversationNotFound, selectors.NotYourConversation):
        return _error(404, "not_found", "This conversation does not exist.")
    files = request.FILES.getlist("file")
    text = request.POST.get("text", "")
    try:
        # Files need no words: the socket's rules check the client id, and the text if any.
        message = protocol.parse_message(
            {"client_id": request.POST.get("client_id"), "text": text if text.strip() else "-"}
        )
        if not files:
            raise attachments.AttachmentRefused("no_files", "Please choose a file to attach.")
        checked = attachments.validate(files)
    except attachments.AttachmentRefused as refused:
        return _error(refused.status, refused.code, refused.message)
    except protocol.FrameError as refused:
        return _error(400, refused.code, refused.message)
    text = message.text if text.strip() else ""

    def admit() -> None:
        _spend("rate", settings.CHAT_RATE_LIMIT, visitor_id)
        _spend("rate-ip", settings.CHAT_IP_RATE_LIMIT, request.META.get("REMOTE_ADDR"))

    try:
        if services.is_pending(conversation):
            conversation = _stored(conversation, request)
        posted = services.post_customer_message(
            conversation, message.client_id, text, admit=admit, files=checked
        )
    except protocol.FrameError as refused:
        return _error(429, refused.code, refused.message)
    return JsonResponse(
        {"ack": posted.ack_frame(), "turn": posted.turn.as_event()},
        status=200 if posted.duplicate else 201,
    )


def _stored(conversation: Conversation, request: HttpRequest) -> Conversation:
    """The visitor's next conversation, stored now: budgeted per address as on the socket."""
    _spend(
        "new-conversation",
        settings.CHAT_NEW_CONVERSATIONS_PER_IP,
        request.META.get("REMOTE_ADDR"),
    )
    # A file before any words: the browser is known from the request, the page is not.
    return services.store_conversation(conversation, context.from_request_meta(request.META))


def _spend(budget: str, limit_spec: str, who: object) -> None:
    """The socket's budgets (consumers.ChatConsumer._spend), shared with it: an upload costs
    what a message does."""
    if limit_spec == "off":
        return
    limit, _, window = limit_spec.partition("/")
    bucket = key(budget, who or "unknown")
    redis = sync_client()
    with redis.pipeline(transaction=True) as pipe:
        pipe.set(bucket, 0, ex=int(window), nx=True)
        pipe.incr(bucket)
        _, count = pipe.execute()
    if count > int(limit):
        ttl = redis.ttl(bucket)
        raise protocol.FrameError(
            "rate_limited",
            f"You're sending messages too quickly. Please wait {max(ttl, 1)} seconds.",
        )


@require_GET
def download(request: HttpRequest, attachment_id: str) -> HttpResponseBase:
    """GET /chat/attachments/<id>/ (?thumbnail=1 for an image's small copy, ?download=1 to
    save it): for the conversation's customer and the team only; anyone else gets the 404 an
    unknown id gets."""
    attachment = attachments.viewable(
        attachment_id, visitor_id_from_request(request), getattr(request, "user", None)
    )
    if attachment is None:
        raise Http404("No such file.")
    thumbnail = request.GET.get("thumbnail") == "1" and bool(attachment.thumbnail)
    stored = attachment.thumbnail if thumbnail else attachment.file
    content_type = attachments.thumbnail_type(attachment) if thumbnail else attachment.content_type
    try:
        handle = default_storage.open(str(stored.name), "rb")
    except FileNotFoundError:
        raise Http404("No such file.") from None
    response = FileResponse(handle, content_type=content_type)
    response["Content-Length"] = str(stored.size)
    as_attachment = request.GET.get("download") == "1"
    response["Content-Disposition"] = str(
        content_disposition_header(as_attachment, attachment.name)
    )
    response["X-Content-Type-Options"] = "nosniff"
    # Opened in a tab, the file is its own sandboxed document: no script, no same origin.
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    # Never in a shared cache; the browser may keep it a while (the file never changes).
    response["Cache-Control"] = "private, max-age=3600"
    response["Vary"] = "Cookie, X-Support-Bot-Visitor"
    return response
