"""The context panel's endpoints (docs/inbox.md#context), apart from views.py so that the
panel's code stays in its own files. Thin: check the user, call one selector or service."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from . import contact as contact_service
from . import selectors_context, services
from .views import _body, agent_api


@require_GET
@agent_api(services.WORK_INBOX)
def context(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return JsonResponse(selectors_context.conversation_context(conversation_id))


@require_POST
@agent_api(services.WORK_INBOX)
def contact(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """{"name"?, "email"?}: the customer's contact details; the panel's data back."""
    contact_service.update_contact(conversation_id, _body(request))
    return JsonResponse(selectors_context.conversation_context(conversation_id))
