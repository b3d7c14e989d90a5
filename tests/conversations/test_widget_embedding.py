"""Embedding the widget on another site (issue 16, point 1): the sites allowed to embed it
(admin and environment), the iframe page's frame-ancestors, the widget's visitor token and its
socket (/ws/widget/), and bad input refused clearly, never with a 500."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings

from conversations import embedding
from conversations.models import Conversation, Customer, Turn, WidgetSite
from conversations.views import VISITOR_HEADER
from tests.conftest import ORIGIN, receive_until

SHOP = "http://localhost:8102"
ELSEWHERE = "https://evil.example"


# --- Origins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "origin"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("HTTPS://WWW.Example.com:443/", "https://www.example.com"),
        ("http://localhost:8102", "http://localhost:8102"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        (" https://shop.example.com:8443 ", "https://shop.example.com:8443"),
    ],
)
def test_an_origin_is_written_as_browsers_send_it(written, origin):
    assert embedding.normalise_origin(written) == origin


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "example.com",
        "ftp://example.com",
        "https://example.com/shop",
        "https://*.example.com",
        "https://.example.com",
        "https://example.com:0",
        "https://example.com:99999",
        "*",
    ],
)
def test_anything_but_an_origin_is_refused(bad):
    with pytest.raises(ValueError, match="origin|port"):
        embedding.normalise_origin(bad)


@pytest.mark.django_db
def test_operators_list_sites_in_the_admin_validated_and_normalised():
    site = WidgetSite(origin="HTTPS://Shop.Example.com:443/")
    site.full_clean()
    assert site.origin == "https://shop.example.com"
    with pytest.raises(ValidationError) as refused:
        WidgetSite(origin="shop.example.com/page").full_clean()
    assert "origin" in refused.value.message_dict


@pytest.mark.django_db
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=["https://env.example"])
def test_the_allowed_sites_are_the_admins_and_the_environments():
    WidgetSite.objects.create(origin="https://admin.example")
    assert {"https://admin.example", "https://env.example"} <= set(embedding.allowed_origins())
    assert embedding.may_embed("https://admin.example")
    assert embedding.may_embed("https://env.example:443")
    assert not embedding.may_embed(ELSEWHERE)
    assert not embedding.may_embed("https://admin.example:8443")  # another port, another site
    assert not embedding.may_embed("http://admin.example")  # another scheme too
    assert not embedding.may_embed("")
    assert not embedding.may_embed("garbage")


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[])
def test_checking_a_site_costs_no_query_and_an_admin_change_applies_at_once(
    django_assert_num_queries,
):
    assert not embedding.may_embed(SHOP)
    with django_assert_num_queries(0):
        for _ in range(5):
            assert not embedding.may_embed(SHOP)
    WidgetSite.objects.create(origin=SHOP)  # committed: the configuration cache is told
    assert embedding.may_embed(SHOP)
    with django_assert_num_queries(0):
        assert embedding.may_embed(SHOP)
    WidgetSite.objects.all().delete()
    assert not embedding.may_embed(SHOP)


@override_settings(WIDGET_ANY_SITE=True)
def test_under_development_settings_any_site_may_embed():
    assert embedding.may_embed(ELSEWHERE)
    assert embedding.frame_ancestors() == "frame-ancestors *"


# --- The iframe page ------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
def test_the_widget_page_may_be_framed_by_the_allowed_sites_only(client):
    response = client.get("/chat/", {"embed": "1", "site": SHOP})
    assert response.status_code == 200
    assert "X-Frame-Options" not in response
    policy = response["Content-Security-Policy"]
    assert policy.startswith("frame-ancestors 'self' ")
    assert SHOP in policy.split() and ELSEWHERE not in policy
    assert response.context["ws_path"] == "/ws/widget/"
    assert 'data-site="http://localhost:8102"' in response.content.decode()
    # The iframe page knows no visitor and sets no cookie; nothing is stored.
    assert "sb_visitor" not in response.cookies
    assert Customer.objects.count() == 0 and Conversation.objects.count() == 0
    # Every other page still refuses to be framed.
    assert client.get("/chat/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
@pytest.mark.parametrize("site", [ELSEWHERE, "", "javascript:alert(1)", "x" * 5000])
def test_a_site_not_allowed_gets_a_clear_refusal_and_no_chat(client, site):
    response = client.get("/chat/", {"embed": "1", "site": site})
    assert response.status_code == 403
    body = response.content.decode()
    assert "Chat unavailable on this site" in body
    assert "/ws/" not in body and "chat.js" not in body
    assert response["Content-Security-Policy"] == "frame-ancestors *"


# --- The token and the widget's socket --------------------------------------------------------


async def widget_socket(first_frame: object) -> WebsocketCommunicator:
    from support_bot.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/widget/", [(b"origin", ORIGIN.encode())])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    if isinstance(first_frame, str):
        await communicator.send_to(text_data=first_frame)
    else:
        await communicator.send_json_to(first_frame)
    return communicator


async def refused_with(communicator: WebsocketCommunicator, close_code: int, code: str) -> None:
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == code, error
    assert error["message"]
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": close_code}


def auth(token: str = "", conversation: str = "", site: str = SHOP) -> dict[str, str]:
    return {"type": "auth", "token": token, "conversation": conversation, "site": site}


count_customers = database_sync_to_async(lambda: Customer.objects.count())


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
async def test_a_new_widget_visitor_gets_a_token_and_keeps_their_conversation_with_it():
    socket = await widget_socket(auth())
    session = await socket.receive_json_from(timeout=5)
    assert session["type"] == "session" and session["token"] and session["conversation_id"]
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "conversation" and snapshot["turns"] == []
    assert await count_customers() == 0  # opening the widget stores nothing

    await socket.send_json_to({"type": "message", "client_id": "m1", "text": "Hello there"})
    await receive_until(socket, lambda f: f["type"] == "ack")
    await socket.disconnect()
    assert await count_customers() == 1

    again = await widget_socket(auth(session["token"]))
    resumed = await again.receive_json_from(timeout=5)
    assert resumed["conversation_id"] == session["conversation_id"]
    snapshot = await again.receive_json_from(timeout=5)
    assert snapshot["turns"][0]["text"] == "Hello there"
    await again.disconnect()

    # Someone else's token does not open it.
    stranger = await widget_socket(auth("", session["conversation_id"]))
    await stranger.receive_json_from(timeout=5)  # the stranger's own session
    await refused_with(stranger, 4403, "forbidden")


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
@pytest.mark.parametrize(
    "first_frame",
    [
        auth("not-a-token"),
        auth(embedding.visitor_token(Customer(pk="0" * 32).pk) + "x"),
        {"type": "auth", "token": 12345, "site": SHOP},
        {"type": "message", "client_id": "m1", "text": "hi"},
        "{not json",
        "[]",
    ],
    ids=["forged", "tampered", "not-a-string", "no-auth-first", "bad-json", "not-an-object"],
)
async def test_a_bad_token_or_first_frame_is_refused_clearly(first_frame):
    socket = await widget_socket(first_frame)
    await refused_with(socket, 4401, "unauthenticated")
    assert await count_customers() == 0


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
async def test_an_expired_token_is_refused_clearly():
    import uuid

    token = embedding.visitor_token(uuid.uuid4())
    with override_settings(CHAT_VISITOR_MAX_AGE=-1):
        socket = await widget_socket(auth(token))
        await refused_with(socket, 4401, "unauthenticated")


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
@pytest.mark.parametrize("site", [ELSEWHERE, "", None, "http://localhost:8103"])
async def test_a_widget_socket_for_a_site_not_allowed_is_refused(site):
    socket = await widget_socket({"type": "auth", "token": "", "site": site})
    await refused_with(socket, 4403, "site_not_allowed")


@pytest.mark.django_db(transaction=True)
async def test_the_widget_socket_checks_its_own_origin_like_every_socket():
    from support_bot.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/widget/", [(b"origin", b"http://localhost:8102")]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


@pytest.mark.django_db(transaction=True)
@override_settings(
    WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP], CHAT_NEW_CONVERSATIONS_PER_IP="1/60"
)
async def test_token_visitors_share_their_addresss_budget_for_new_conversations():
    first = await widget_socket(auth())
    await first.receive_json_from(timeout=5)
    await first.receive_json_from(timeout=5)
    await first.send_json_to({"type": "message", "client_id": "m1", "text": "one"})
    await receive_until(first, lambda f: f["type"] == "ack")
    await first.disconnect()

    second = await widget_socket(auth())  # a fresh token: another visitor, same address
    await second.receive_json_from(timeout=5)
    await second.receive_json_from(timeout=5)
    await second.send_json_to({"type": "message", "client_id": "m2", "text": "two"})
    refused = await receive_until(second, lambda f: f["type"] == "error")
    assert refused[-1]["code"] == "rate_limited"
    await second.disconnect()
    assert await count_customers() == 1


# --- The widget's HTTP requests: the token in a header ------------------------------------------


@pytest.mark.django_db
def test_the_widget_lists_and_starts_conversations_with_its_token(client, alice):
    conversation = Conversation.objects.create(customer=alice)
    Turn.objects.create(conversation=conversation, author="customer", text="Where is my parcel?")
    token = embedding.visitor_token(alice.pk)
    listed = client.get(
        "/chat/conversations/", {"embed": "1", "site": SHOP}, headers={VISITOR_HEADER: token}
    )
    assert listed.status_code == 200
    [item] = listed.json()["conversations"]
    assert item["url"].endswith("&embed=1&site=http%3A%2F%2Flocalhost%3A8102")
    # The header is no ambient credential: no CSRF token needed.
    started = client.post("/chat/conversations/new/?embed=1", headers={VISITOR_HEADER: token})
    assert started.status_code == 201

    for bad in ("", "forged", "x" * 500):
        refused = client.get("/chat/conversations/", headers={VISITOR_HEADER: bad})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert (
            client.post("/chat/conversations/new/", headers={VISITOR_HEADER: bad}).status_code
            == 401
        )


# --- The admin ------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(WIDGET_ALLOWED_ORIGINS=["https://env.example"])
def test_the_admin_lists_the_sites_and_shows_the_snippet_to_copy(client):
    staff = User.objects.create_user(
        "ops", password="pw-ops-12345", is_staff=True, is_superuser=True
    )
    client.force_login(staff)
    WidgetSite.objects.create(origin="https://shop.example.com")
    page = client.get("/admin/conversations/widgetsite/").content.decode()
    assert (
        "&lt;script src=&quot;http://testserver/static/chat/widget.js&quot; "
        "data-support-bot async&gt;&lt;/script&gt;" in page
    )
    assert "https://shop.example.com" in page and "https://env.example" in page
    added = client.post(
        "/admin/conversations/widgetsite/add/", {"origin": "not an origin", "note": ""}
    )
    assert added.status_code == 200 and "Write an origin" in added.content.decode()
    client.post(
        "/admin/conversations/widgetsite/add/", {"origin": "HTTP://LOCALHOST:8102/", "note": ""}
    )
    assert WidgetSite.objects.filter(origin="http://localhost:8102").exists()
