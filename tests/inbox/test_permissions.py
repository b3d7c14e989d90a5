"""Who may open the agent workspace: a customer (visitor cookie), alice_agent (Agents),
olivia_operator (Operators) and oscar_outsider (staff, no group), who must see nothing."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from conversations.models import Conversation, Customer
from inbox.models import Note
from tests import personas
from tests.conftest import ORIGIN, visitor_cookie_header

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
oscar_outsider = personas.oscar_outsider
olivia_operator = personas.olivia_operator
pending = personas.pending

ACTIONS = [
    "take-over",
    "hand-back",
    "reply",
    "notes",
    "snooze",
    "resolve",
    "reopen",
    "read",
    "assist",
]


def logged_in(user: User) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def customer_client(customer: Customer) -> Client:
    client = Client()
    client.cookies[settings.CHAT_VISITOR_COOKIE] = (
        visitor_cookie_header(customer).decode().split("=", 1)[1]
    )
    return client


def post(client: Client, conversation: Conversation, action: str, body: dict | None = None):
    return client.post(
        f"/agent/api/conversations/{conversation.pk}/{action}/",
        json.dumps(body or {}),
        content_type="application/json",
    )


@pytest.mark.django_db
def test_it_never_opens_agent_pages_or_endpoints_for_a_customer(pending):
    client = customer_client(pending.customer)
    assert client.get("/chat/").status_code == 200  # the cookie works where it should
    for url in ("/agent/", f"/agent/conversations/{pending.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.get("/agent/api/inbox/").status_code == 401
    for action in ACTIONS:
        response = post(client, pending, action, {"text": "hi", "kind": "summary"})
        assert response.status_code == 401, action
        assert response.json() == {"error": "Please log in as staff."}
    pending.refresh_from_db()
    assert pending.assignee is None and not Note.objects.exists()


@pytest.mark.django_db
def test_it_shows_an_outsider_a_clear_403_and_nothing_else(pending, oscar_outsider):
    client = logged_in(oscar_outsider)
    for url in ("/agent/", f"/agent/conversations/{pending.pk}/"):
        response = client.get(url)
        assert response.status_code == 403
        assert b"permission to work the agent inbox" in response.content
        assert b"Where is my parcel" not in response.content
    response = client.get("/agent/api/inbox/")
    assert response.status_code == 403
    assert response.json() == {"error": "You don't have permission to work the agent inbox."}
    for action in ACTIONS:
        response = post(client, pending, action, {"text": "hi", "kind": "summary", "minutes": 5})
        assert response.status_code == 403, action
        assert response.json()["error"].startswith("You don't have permission to")
    pending.refresh_from_db()
    assert (pending.status, pending.assignee) == ("pending", None)


@pytest.mark.django_db
def test_it_lets_an_agent_work_the_inbox(pending, alice_agent, bob_agent):
    client = logged_in(alice_agent)
    page = client.get("/agent/")
    assert page.status_code == 200 and b"Inbox" in page.content
    conversation_page = client.get(f"/agent/conversations/{pending.pk}/")
    assert conversation_page.status_code == 200
    assert b'aria-label="Reply"' in conversation_page.content
    rows = client.get("/agent/api/inbox/").json()["rows"]
    assert [r["id"] for r in rows] == [str(pending.pk)]
    assert post(client, pending, "take-over").json()["row"]["assignee"]["name"] == "Anna"
    lost = post(logged_in(bob_agent), pending, "take-over")
    assert lost.status_code == 409
    assert lost.json() == {
        "error": "Already taken by Anna",
        "code": "taken",
        "taken_by": "Anna",
    }
    assert post(client, pending, "reply", {"text": "Hello"}).status_code == 201
    assert post(client, pending, "notes", {"text": "internal"}).status_code == 201
    assert post(client, pending, "snooze", {"minutes": 30}).json()["row"]["status"] == "snoozed"
    assert post(client, pending, "resolve").json()["row"]["status"] == "resolved"
    assert post(client, pending, "reopen").json()["row"]["status"] == "pending"
    assert post(client, pending, "hand-back").json()["row"]["status"] == "open"
    assert post(client, pending, "reply", {"text": "x" * 4001}).status_code == 400


@pytest.mark.django_db
def test_it_lets_an_operator_work_the_inbox_too(pending, olivia_operator):
    client = logged_in(olivia_operator)
    assert client.get("/agent/").status_code == 200
    assert post(client, pending, "take-over").status_code == 200
    assert post(client, pending, "resolve").json()["row"]["status"] == "resolved"


@pytest.mark.django_db
def test_it_needs_the_csrf_token_for_actions(pending, alice_agent):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice_agent)
    assert post(client, pending, "take-over").status_code == 403
    pending.refresh_from_db()
    assert pending.assignee is None


@pytest.mark.django_db
def test_it_answers_unknown_conversations_and_bad_bodies_with_json(alice_agent):
    client = logged_in(alice_agent)
    missing = Conversation(pk="00000000-0000-0000-0000-000000000000")
    response = post(client, missing, "take-over")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = client.post(
        f"/agent/api/conversations/{missing.pk}/reply/", "not json", content_type="application/json"
    )
    assert response.status_code == 400 and "error" in response.json()


@pytest.mark.django_db
def test_it_answers_an_assist_request_the_task_queue_cannot_take_with_a_json_503(
    pending, alice_agent, monkeypatch
):
    from kombu.exceptions import OperationalError

    def broker_down(*args):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("inbox.tasks.assist.delay", broker_down)
    response = post(logged_in(alice_agent), pending, "assist", {"kind": "summary"})
    assert response.status_code == 503
    assert response.json() == {
        "error": "The assistant can't be reached right now. Try again in a moment.",
        "code": "unavailable",
    }


# --- The agents' socket ----------------------------------------------------------------------


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def open_inbox(cookie: str | None, origin: str | None = ORIGIN) -> WebsocketCommunicator:
    from support_bot.asgi import application

    headers = []
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, "/ws/inbox/", headers)
    return communicator


async def closed_with(communicator: WebsocketCommunicator) -> int | None:
    connected, _ = await communicator.connect(timeout=5)
    if not connected:
        return None
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return int(output["code"])


@pytest.mark.django_db(transaction=True)
async def test_it_closes_the_inbox_socket_4401_for_a_customer(pending):
    customer = await database_sync_to_async(lambda: pending.customer)()
    cookie = visitor_cookie_header(customer).decode()
    assert await closed_with(await open_inbox(cookie)) == 4401
    assert await closed_with(await open_inbox(None)) == 4401


@pytest.mark.django_db(transaction=True)
async def test_it_closes_the_inbox_socket_4403_for_an_outsider(oscar_outsider):
    cookie = await database_sync_to_async(session_cookie)(oscar_outsider)
    assert await closed_with(await open_inbox(cookie)) == 4403


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_the_inbox_socket_from_a_foreign_origin(alice_agent):
    cookie = await database_sync_to_async(session_cookie)(alice_agent)
    communicator = await open_inbox(cookie, origin="https://evil.example")
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", ["alice_agent", "olivia_operator"])
async def test_it_opens_the_inbox_socket_for_agents_and_operators(persona, request):
    user = await database_sync_to_async(request.getfixturevalue)(persona)
    cookie = await database_sync_to_async(session_cookie)(user)
    communicator = await open_inbox(cookie)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello" and hello["me"]["id"] == user.pk
    await communicator.disconnect()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"minutes": 1e300},
        {"minutes": 10**30},
        {"minutes": 0},
        {"minutes": 1.5},
        {"minutes": 60 * 24 * 30 + 1},
        {"minutes": "30"},
        {"until": "9999-12-31T23:59:59-12:00"},
        {"until": "2000-01-01T00:00:00+00:00"},
    ],
)
def test_it_answers_a_snooze_out_of_range_with_a_json_error_and_changes_nothing(
    pending, alice_agent, body
):
    response = post(logged_in(alice_agent), pending, "snooze", body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["error"]
    pending.refresh_from_db()
    assert (pending.status, pending.snoozed_until) == ("pending", None)


@pytest.mark.django_db
def test_it_snoozes_for_up_to_thirty_days(pending, alice_agent):
    client = logged_in(alice_agent)
    assert post(client, pending, "snooze", {"minutes": 60 * 24 * 30}).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("user_id", [10**30, -1, 0, True])
def test_it_answers_an_assignment_to_an_impossible_user_id_with_a_json_error(
    pending, alice_agent, user_id
):
    response = post(logged_in(alice_agent), pending, "assign", {"user_id": user_id})
    assert response.status_code in (400, 404)
    assert response.json()["error"]


@pytest.mark.django_db
def test_it_answers_json_nested_too_deep_with_a_json_error(pending, alice_agent):
    response = logged_in(alice_agent).post(
        f"/agent/api/conversations/{pending.pk}/reply/",
        '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}",
        content_type="application/json",
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid"


@pytest.mark.django_db
def test_it_answers_a_reply_with_a_lone_surrogate_with_a_json_error(pending, alice_agent):
    client = logged_in(alice_agent)
    post(client, pending, "take-over")
    response = client.post(
        f"/agent/api/conversations/{pending.pk}/reply/",
        '{"text": "x\\ud800y"}',
        content_type="application/json",
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid"


@pytest.mark.django_db
def test_it_answers_a_csrf_failure_under_the_agent_api_in_json(pending, alice_agent):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice_agent)
    response = post(client, pending, "take-over")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "csrf_failed" and "reload" in response.json()["error"]
    # Pages keep Django's page.
    page = client.post("/admin/logout/")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")
