"""Where a chat started (issue 17 point 4): the page and referrer the chat page (or, for the
widget, its host page) sends in its `context` frame, the browser and language from the socket's
handshake, recorded once when the conversation is stored; junk is dropped, never a 500 or a
refused chat. And the identify claim's `attributes`."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from conversations import context, services
from conversations.identity import identify, user_hash
from conversations.models import Conversation, Customer
from tests.conftest import ORIGIN, receive_until, visitor_cookie_header
from tests.conversations.test_widget_embedding import SHOP, auth, widget_socket

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
SECRET = "test-identify-secret-0123456789"

stored = database_sync_to_async(lambda pk: Conversation.objects.get(pk=pk))


async def chat_socket(customer: Customer, conversation_id: object) -> WebsocketCommunicator:
    from support_bot.asgi import application

    headers = [
        (b"origin", ORIGIN.encode()),
        (b"cookie", visitor_cookie_header(customer)),
        (b"user-agent", CHROME_WINDOWS.encode()),
        (b"accept-language", b"fr-CH, fr;q=0.9, en;q=0.8"),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "conversation"
    return communicator


async def say(socket: WebsocketCommunicator, client_id: str, text: str) -> None:
    await socket.send_json_to({"type": "message", "client_id": client_id, "text": text})
    await receive_until(socket, lambda f: f["type"] == "ack")


def next_conversation_id(customer: Customer) -> str:
    return str(services.page_conversation_id(customer.pk))


# --- Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (
            "https://shop.example.com/p/42?ref=mail#reviews",
            "https://shop.example.com/p/42?ref=mail",
        ),
        ("https://ada:s3cret@shop.example.com/account", "https://shop.example.com/account"),
        ("HTTP://Shop.Example.com:8080/x", "http://shop.example.com:8080/x"),
        ("http://[::1]:8000/", "http://[::1]:8000/"),
        ("javascript:alert(1)", ""),
        ("data:text/html,<b>hi</b>", ""),
        ("ftp://files.example.com/", ""),
        ("/relative/path", ""),
        ("https://", ""),
        ("https://shop.example.com:99999/", ""),
        ("https://shop.example.com/\nSet-Cookie: x", ""),
        ("https://shop.example.com/" + "a" * 2000, ""),
        (42, ""),
        (None, ""),
        (["https://shop.example.com/"], ""),
    ],
)
def test_it_keeps_only_http_urls_without_credentials_or_fragment(given, kept):
    assert context.clean_url(given) == kept


@pytest.mark.parametrize(
    ("user_agent", "label"),
    [
        (CHROME_WINDOWS, "Chrome 131 on Windows"),
        (SAFARI_IPHONE, "Mobile Safari 17 on iOS"),
        ("curl/8.5.0", "curl 8"),
        ("", ""),
        ("definitely not a browser", ""),
    ],
)
def test_it_names_the_browser_with_ua_parser(user_agent, label):
    assert context.browser_label(user_agent) == label


@pytest.mark.parametrize(
    ("frame", "language", "time_zone"),
    [
        ({"language": "pt-BR", "time_zone": "America/Sao_Paulo"}, "pt-BR", "America/Sao_Paulo"),
        ({"language": "<script>", "time_zone": "Mars/Olympus_Mons"}, "fr-CH", ""),
        ({"language": 7, "time_zone": ["Europe/Paris"]}, "fr-CH", ""),
        ({"language": "x" * 40, "time_zone": "../../etc/passwd"}, "fr-CH", ""),
    ],
)
def test_it_drops_a_bad_language_or_time_zone_and_keeps_the_handshakes(frame, language, time_zone):
    known = context.from_headers([(b"accept-language", b"fr-CH, fr;q=0.9")])
    completed = context.with_frame(known, frame)
    assert (completed.browser_language, completed.time_zone) == (language, time_zone)


# --- Capture on the chat page's socket ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_it_records_where_a_chat_page_conversation_started_with_its_first_message(alice):
    conversation_id = await database_sync_to_async(next_conversation_id)(alice)
    socket = await chat_socket(alice, conversation_id)
    await socket.send_json_to(
        {
            "type": "context",
            "page": "https://support.example.com/chat/",
            "referrer": "https://www.example.com/pricing?plan=pro",
            "language": "de-DE",
            "time_zone": "Europe/Berlin",
        }
    )
    await say(socket, "m-1", "Can I pay yearly?")
    conversation = await stored(conversation_id)
    assert conversation.started_page_url == "https://support.example.com/chat/"
    assert conversation.started_referrer == "https://www.example.com/pricing?plan=pro"
    assert conversation.browser == "Chrome 131 on Windows"
    assert conversation.user_agent == CHROME_WINDOWS
    assert (conversation.browser_language, conversation.time_zone) == ("de-DE", "Europe/Berlin")

    # Once per conversation: a later socket's context does not rewrite it.
    again = await chat_socket(alice, conversation_id)
    await again.send_json_to({"type": "context", "page": "https://elsewhere.example/"})
    await say(again, "m-2", "And monthly?")
    assert (await stored(conversation_id)).started_page_url == "https://support.example.com/chat/"
    await socket.disconnect()
    await again.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_junk_context_is_dropped_and_the_chat_goes_on(alice):
    conversation_id = await database_sync_to_async(next_conversation_id)(alice)
    socket = await chat_socket(alice, conversation_id)
    await socket.send_json_to(
        {
            "type": "context",
            "page": "javascript:alert(document.cookie)",
            "referrer": {"nested": ["object"]},
            "language": None,
            "time_zone": 12,
        }
    )
    await say(socket, "m-1", "Hello")
    conversation = await stored(conversation_id)
    assert (conversation.started_page_url, conversation.started_referrer) == ("", "")
    assert conversation.browser_language == "fr-CH"  # the handshake's Accept-Language
    assert conversation.time_zone == ""
    assert conversation.browser == "Chrome 131 on Windows"
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_without_a_context_frame_the_handshake_still_tells_the_browser(alice):
    conversation_id = await database_sync_to_async(next_conversation_id)(alice)
    socket = await chat_socket(alice, conversation_id)
    await say(socket, "m-1", "Hello")
    conversation = await stored(conversation_id)
    assert (conversation.browser, conversation.browser_language) == (
        "Chrome 131 on Windows",
        "fr-CH",
    )
    assert conversation.started_page_url == ""
    await socket.disconnect()


# --- Capture on the widget's socket ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
async def test_it_records_the_widgets_host_page_and_its_referrer():
    socket = await widget_socket(auth())
    session = await socket.receive_json_from(timeout=5)
    assert (await socket.receive_json_from(timeout=5))["type"] == "conversation"
    await socket.send_json_to(
        {
            "type": "context",
            "page": f"{SHOP}/checkout?step=2",
            "referrer": "https://www.google.com/",
            "language": "en-GB",
            "time_zone": "Europe/London",
        }
    )
    await say(socket, "m-1", "My card is refused")
    conversation = await stored(session["conversation_id"])
    assert conversation.started_page_url == f"{SHOP}/checkout?step=2"
    assert conversation.started_referrer == "https://www.google.com/"
    assert (conversation.browser_language, conversation.time_zone) == ("en-GB", "Europe/London")
    await socket.disconnect()


# --- identify's attributes ---------------------------------------------------------------------


def claim(**fields: object) -> dict[str, object]:
    return {"id": "user-42", "name": "Ada", "user_hash": user_hash("user-42", SECRET), **fields}


@pytest.mark.django_db
@override_settings(WIDGET_IDENTITY_SECRET=SECRET)
def test_it_stores_an_identified_users_attributes_clipped_and_replaces_them_when_given():
    attributes = {"plan": "Pro", "seats": 12, "mrr": 99.5, "trial": False, "bio": "b" * 900}
    result = identify(None, claim(attributes=attributes))
    assert result.error is None
    customer = Customer.objects.get(external_id="user-42")
    assert customer.attributes == {**attributes, "bio": "b" * 500}

    identify(None, claim())  # no attributes given: the stored ones stay
    assert Customer.objects.get(pk=customer.pk).attributes["plan"] == "Pro"
    identify(None, claim(attributes={"plan": "Team"}))
    assert Customer.objects.get(pk=customer.pk).attributes == {"plan": "Team"}


@pytest.mark.django_db
@override_settings(WIDGET_IDENTITY_SECRET=SECRET)
@pytest.mark.parametrize(
    "attributes",
    [
        ["plan", "Pro"],
        "plan=Pro",
        {"nested": {"plan": "Pro"}},
        {"list": [1, 2]},
        {"nothing": None},
        {f"k{i}": i for i in range(21)},
        {"k" * 65: "long name"},
        {"": "empty name"},
        {"huge": 2**60},
        {"text": "broken \ud800"},
    ],
    ids=[
        "list",
        "string",
        "nested",
        "list-value",
        "null",
        "21-keys",
        "long-name",
        "empty-name",
        "huge-number",
        "lone-surrogate",
    ],
)
def test_it_refuses_bad_attributes_with_identifys_code_and_stores_nothing(alice, attributes):
    result = identify(alice.pk, claim(attributes=attributes))
    assert result.error is not None and result.error.code == "bad_identity"
    assert result.error.message.startswith("identify:")
    assert not Customer.objects.filter(external_id__isnull=False).exists()


def test_an_upload_that_starts_a_conversation_tells_the_browser_from_its_request():
    started = context.from_request_meta(
        {"HTTP_USER_AGENT": SAFARI_IPHONE, "HTTP_ACCEPT_LANGUAGE": "es-MX,es;q=0.9"}
    )
    assert (started.browser, started.browser_language) == ("Mobile Safari 17 on iOS", "es-MX")
    assert context.from_request_meta({}) == context.StartContext()
