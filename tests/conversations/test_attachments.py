"""Attachments (docs/attachments.md): what a customer may upload, what is stored, and who may
open it. Personas: customers alice and bob (bob must never get alice's files), the team's
alice_agent (Agents) and oscar_outsider (staff without a group, who must get nothing).

Every test stores its files in a MEDIA_ROOT of its own (the `media` fixture)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from bot.wording import wording_for
from conversations import attachments, services
from conversations.models import Attachment, Conversation, Customer, Turn
from conversations.selectors import conversation_snapshot
from conversations.visitors import signed_visitor_cookie
from tests import personas

pytestmark = pytest.mark.django_db

alice_agent = personas.alice_agent
oscar_outsider = personas.oscar_outsider


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def png_bytes(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red").save(out, "PNG")
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring a huge image: 10 gigapixels from a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def upload(name: str, content: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def client_of(customer: Customer | None) -> Client:
    client = Client()
    if customer is not None:
        client.cookies[settings.CHAT_VISITOR_COOKIE] = signed_visitor_cookie(customer.pk)
    return client


def staff_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def send_files(
    customer: Customer,
    conversation: Conversation,
    *files: SimpleUploadedFile,
    text: str = "",
    client_id: str = "up-1",
):
    return client_of(customer).post(
        "/chat/attachments/",
        {"conversation": str(conversation.pk), "client_id": client_id, "text": text, "file": files},
    )


def error_code(response) -> str:
    return response.json()["error"]["code"]


# --- What is accepted and stored --------------------------------------------------------------


def test_it_stores_an_image_with_its_message_and_a_thumbnail(alice, alice_conversation, media):
    response = send_files(
        alice, alice_conversation, upload("lamp.png", png_bytes((800, 600))), text="It blinks"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    turn = Turn.objects.get(pk=body["ack"]["turn_id"])
    assert (turn.author, turn.text, turn.client_message_id) == ("customer", "It blinks", "up-1")
    assert body["ack"]["reply_id"] is not None  # words with it: the bot answers them
    [attachment] = turn.attachments.all()
    assert (attachment.name, attachment.content_type) == ("lamp.png", "image/png")
    assert (attachment.width, attachment.height) == (800, 600)
    [event] = body["turn"]["attachments"]
    assert event["url"] == f"/chat/attachments/{attachment.pk}/"
    assert event["thumbnail_url"] == f"/chat/attachments/{attachment.pk}/?thumbnail=1"
    # Stored through the storage API under a random path, not the customer's file name.
    assert {p.name for p in stored_files(media)} == {
        Path(attachment.file.name).name,
        Path(attachment.thumbnail.name).name,
    }
    assert "lamp" not in attachment.file.name
    with Image.open(attachment.thumbnail) as thumbnail:
        assert max(thumbnail.size) == 320


def test_it_tells_the_type_from_the_content_not_the_name_or_the_browser(
    alice, alice_conversation, media
):
    response = send_files(
        alice, alice_conversation, upload("report.pdf", png_bytes(), "application/pdf")
    )

    assert response.status_code == 201, response.content
    [attachment] = Attachment.objects.all()
    assert attachment.content_type == "image/png"
    assert attachment.name == "report.pdf.png"


def test_it_refuses_a_file_that_only_pretends_to_be_an_image(alice, alice_conversation, media):
    html = b"<html><script>alert(document.cookie)</script></html>"

    response = send_files(alice, alice_conversation, upload("cat.png", html, "image/png"))

    assert response.status_code == 400
    assert error_code(response) == "unsupported_type"
    assert "only images" in response.json()["error"]["message"]
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_it_refuses_a_damaged_image(alice, alice_conversation, media):
    broken = png_bytes()[:40]

    response = send_files(alice, alice_conversation, upload("cut.png", broken))

    assert (response.status_code, error_code(response)) == (400, "damaged_image")
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_it_refuses_a_decompression_bomb_without_decoding_it(alice, alice_conversation, media):
    response = send_files(alice, alice_conversation, upload("bomb.png", png_bomb()))

    assert (response.status_code, error_code(response)) == (413, "image_too_large")
    assert "too large" in response.json()["error"]["message"]
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_it_refuses_a_file_over_the_size_limit(alice, alice_conversation, media, settings):
    settings.ATTACHMENT_MAX_BYTES = 1024

    response = send_files(alice, alice_conversation, upload("big.png", png_bytes((400, 400))))

    assert (response.status_code, error_code(response)) == (413, "file_too_large")
    assert "1 KB" in response.json()["error"]["message"]
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_it_refuses_too_many_files_in_one_message(alice, alice_conversation, media, settings):
    settings.ATTACHMENT_MAX_FILES = 2
    files = [upload(f"{i}.pdf", PDF) for i in range(3)]

    response = send_files(alice, alice_conversation, *files)

    assert (response.status_code, error_code(response)) == (400, "too_many_files")
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_it_stores_nothing_when_one_file_of_several_is_refused(alice, alice_conversation, media):
    files = [upload("ok.pdf", PDF), upload("ok.png", png_bytes()), upload("bad.gif", b"GIF89a")]

    response = send_files(alice, alice_conversation, *files, text="Three files")

    assert (response.status_code, error_code(response)) == (400, "damaged_image")
    assert not Turn.objects.exists()
    assert not Attachment.objects.exists()
    assert stored_files(media) == []


def test_it_removes_the_stored_files_when_the_message_cannot_be_stored(
    alice, alice_conversation, media, monkeypatch
):
    checked = attachments.validate([upload("a.png", png_bytes()), upload("b.pdf", PDF)])

    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services.state, "notify_team", fail)  # after the files were saved
    with pytest.raises(RuntimeError):
        services.post_customer_message(alice_conversation, "c-1", "hi", files=checked)

    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_a_retried_upload_is_stored_once(alice, alice_conversation, media):
    first = send_files(alice, alice_conversation, upload("a.pdf", PDF), client_id="same")
    again = send_files(alice, alice_conversation, upload("a.pdf", PDF), client_id="same")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["ack"]["duplicate"] is True
    assert again.json()["ack"]["turn_id"] == first.json()["ack"]["turn_id"]
    assert Attachment.objects.count() == 1
    assert len(stored_files(media)) == 1


def test_files_alone_get_a_notice_instead_of_a_bot_reply(alice, alice_conversation, media):
    response = send_files(alice, alice_conversation, upload("invoice.pdf", PDF))

    assert response.status_code == 201
    assert response.json()["ack"]["reply_id"] is None
    authors = list(alice_conversation.turns.values_list("author", "text"))
    assert authors == [("customer", ""), ("system", wording_for(None).files_received)]


def test_a_pdf_keeps_its_name_and_gets_no_thumbnail(alice, alice_conversation, media):
    send_files(alice, alice_conversation, upload("../../etc/Invoice: Nov.pdf", PDF))

    [attachment] = Attachment.objects.all()
    assert (attachment.name, attachment.content_type) == ("Invoice_ Nov.pdf", "application/pdf")
    assert not attachment.thumbnail
    assert attachment.as_event()["thumbnail_url"] is None


def test_the_first_upload_stores_the_visitors_next_conversation(alice, media):
    conversation_id = services.page_conversation_id(alice.pk)

    response = client_of(alice).post(
        "/chat/attachments/",
        {"conversation": str(conversation_id), "client_id": "c1", "file": upload("a.pdf", PDF)},
    )

    assert response.status_code == 201, response.content
    assert Conversation.objects.get(pk=conversation_id).customer_id == alice.pk


def test_it_refuses_an_upload_to_someone_elses_conversation(bob, alice_conversation, media):
    response = send_files(bob, alice_conversation, upload("a.pdf", PDF))

    assert (response.status_code, error_code(response)) == (404, "not_found")
    assert stored_files(media) == []


def test_it_refuses_an_upload_without_a_visitor_or_a_file(alice, alice_conversation, media):
    anonymous = Client().post("/chat/attachments/", {"conversation": str(alice_conversation.pk)})
    no_file = client_of(alice).post(
        "/chat/attachments/", {"conversation": str(alice_conversation.pk), "client_id": "c1"}
    )

    assert (anonymous.status_code, error_code(anonymous)) == (401, "unauthenticated")
    assert (no_file.status_code, error_code(no_file)) == (400, "no_files")


def test_an_upload_from_the_chat_page_needs_its_csrf_token(alice, alice_conversation, media):
    client = client_of(alice)
    client.handler.enforce_csrf_checks = True

    response = client.post(
        "/chat/attachments/",
        {"conversation": str(alice_conversation.pk), "client_id": "c1", "file": upload("a", PDF)},
    )

    assert (response.status_code, error_code(response)) == (403, "csrf_failed")


# --- Who may open a file ----------------------------------------------------------------------


@pytest.fixture
def alices_png(alice, alice_conversation, media) -> Attachment:
    response = send_files(alice, alice_conversation, upload("photo of <me>.png", png_bytes()))
    assert response.status_code == 201, response.content
    return Attachment.objects.get()


def test_the_customer_gets_their_file_with_safe_headers(alice, alices_png):
    response = client_of(alice).get(f"/chat/attachments/{alices_png.pk}/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == png_bytes()
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == 'inline; filename="photo of _me_.png"'
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["Cache-Control"].startswith("private")


def test_a_download_link_saves_the_file_and_a_thumbnail_is_an_image(alice, alices_png):
    download = client_of(alice).get(f"/chat/attachments/{alices_png.pk}/?download=1")
    thumbnail = client_of(alice).get(f"/chat/attachments/{alices_png.pk}/?thumbnail=1")

    assert download["Content-Disposition"].startswith("attachment;")
    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"] == "image/jpeg"
    assert b"".join(thumbnail.streaming_content).startswith(b"\xff\xd8\xff")


def test_the_widget_gets_the_file_with_its_visitor_token(alice, alices_png):
    from conversations.embedding import visitor_token

    response = Client().get(
        f"/chat/attachments/{alices_png.pk}/",
        headers={"X-Support-Bot-Visitor": visitor_token(alice.pk)},
    )

    assert response.status_code == 200


def test_nobody_else_gets_the_customers_file(bob, alices_png, oscar_outsider):
    url = f"/chat/attachments/{alices_png.pk}/"

    assert client_of(bob).get(url).status_code == 404
    assert Client().get(url).status_code == 404
    assert staff_client(oscar_outsider).get(url).status_code == 404
    assert client_of(bob).get(url + "?thumbnail=1").status_code == 404
    # An unknown id answers the same: whether a file exists is not given away.
    assert client_of(bob).get(f"/chat/attachments/{'0' * 32}/").status_code == 404


def test_the_team_gets_the_customers_file(alices_png, alice_agent):
    response = staff_client(alice_agent).get(f"/chat/attachments/{alices_png.pk}/")

    assert response.status_code == 200


def test_deleting_the_conversation_deletes_its_files(alice_conversation, alices_png, media):
    assert stored_files(media)

    alice_conversation.delete()

    assert stored_files(media) == []


# --- The agent attaches -----------------------------------------------------------------------


def test_an_agent_attaches_a_pdf_the_customer_can_open(
    alice, bob, alice_conversation, alice_agent, media
):
    response = staff_client(alice_agent).post(
        f"/agent/api/conversations/{alice_conversation.pk}/attachments/",
        {"text": "Here is your invoice", "file": upload("invoice.pdf", PDF)},
    )

    assert response.status_code == 201, response.content
    turn = response.json()["turn"]
    assert (turn["author"], turn["text"], turn["author_name"]) == (
        "agent",
        "Here is your invoice",
        "Anna",
    )
    [event] = turn["attachments"]
    assert (event["name"], event["content_type"], event["size"]) == (
        "invoice.pdf",
        "application/pdf",
        len(PDF),
    )
    assert client_of(alice).get(event["download_url"]).status_code == 200
    assert client_of(bob).get(event["download_url"]).status_code == 404
    # The customer's transcript (on every connect) carries it.
    snapshot = conversation_snapshot(Conversation.objects.get(pk=alice_conversation.pk))
    assert snapshot["turns"][-1]["attachments"] == [event]


def test_an_agent_attachment_is_checked_like_the_customers(alice_conversation, alice_agent, media):
    response = staff_client(alice_agent).post(
        f"/agent/api/conversations/{alice_conversation.pk}/attachments/",
        {"file": upload("virus.pdf", b"MZ\x90\x00 not a pdf")},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_type"
    assert not Turn.objects.exists()
    assert stored_files(media) == []


def test_staff_without_the_inbox_permission_cannot_attach(
    alice_conversation, oscar_outsider, media
):
    response = staff_client(oscar_outsider).post(
        f"/agent/api/conversations/{alice_conversation.pk}/attachments/",
        {"file": upload("a.pdf", PDF)},
    )

    assert response.status_code == 403
    assert stored_files(media) == []


@pytest.mark.parametrize(
    ("given", "content_type", "kept"),
    [
        ("C:\\Users\\me\\scan.JPG", "image/jpeg", "scan.JPG"),
        ("bell\x07 and\r\nnewline.pdf", "application/pdf", "bell_ and_newline.pdf"),
        ('"quoted";.png', "image/png", "quoted_.png"),
        ("", "application/pdf", "attachment.pdf"),
        ("a" * 300 + ".pdf", "application/pdf", "a" * 116 + ".pdf"),
    ],
)
def test_it_makes_file_names_safe_to_show_and_to_download(given, content_type, kept):
    assert attachments.safe_name(given, content_type) == kept


def test_the_transcripts_list_a_messages_files(alice_conversation, alices_png, admin_client):
    from inbox.exports import conversation_record

    record = conversation_record(Conversation.objects.get(pk=alice_conversation.pk))
    page = admin_client.get(f"/admin/conversations/conversation/{alice_conversation.pk}/change/")

    url = f"/chat/attachments/{alices_png.pk}/"
    assert record["messages"][0]["attachments"] == [
        {
            "name": "photo of _me_.png",
            "content_type": "image/png",
            "size": alices_png.size,
            "url": url,
        }
    ]
    assert page.status_code == 200
    assert f'href="{url}"' in page.content.decode()


def test_a_body_larger_than_any_message_is_refused_before_it_is_read(
    alice, alice_conversation, media, settings
):
    settings.ATTACHMENT_MAX_BYTES = 1024
    settings.ATTACHMENT_MAX_FILES = 1
    client = client_of(alice)
    client.handler.enforce_csrf_checks = True  # the CSRF check would read the form first

    response = client.post(
        "/chat/attachments/",
        {"conversation": str(alice_conversation.pk), "file": upload("a.pdf", PDF * 2000)},
    )

    assert (response.status_code, error_code(response)) == (413, "file_too_large")
    assert stored_files(media) == []


def test_the_notice_for_files_alone_speaks_the_customers_language(alice, alice_conversation, media):
    services.post_customer_message(alice_conversation, "c-0", "Meine Lampe blinkt ständig rot")
    Turn.objects.filter(author="bot").delete()  # no worker here: the reply stays queued

    send_files(alice, alice_conversation, upload("lampe.png", png_bytes()))

    notice = alice_conversation.turns.filter(author="system").get()
    assert notice.text == wording_for("de").files_received
