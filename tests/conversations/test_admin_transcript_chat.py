"""The admin's transcript page read as a chat (conversations/transcript.py, the template
admin/conversations/conversation/change_form.html), and the links between the admin, the inbox
and the studio."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from bs4 import BeautifulSoup, Tag
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone

from conversations.models import Attachment, Conversation, Customer, Turn
from inbox.models import Note
from knowledge.models import Article
from studio.models import PromptVersion
from tests import personas

pytestmark = pytest.mark.django_db

alice_agent = personas.alice_agent
olivia_operator = personas.olivia_operator
oscar_outsider = personas.oscar_outsider

HOSTILE = '<img src=x onerror="alert(1)"> and <script>alert(2)</script>'


def change_url(conversation: Conversation) -> str:
    return f"/admin/conversations/conversation/{conversation.pk}/change/"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def soup_of(response: Any) -> BeautifulSoup:
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.content.decode(), "html.parser")


def entries(soup: BeautifulSoup) -> list[Tag]:
    return soup.select("#transcript .transcript__entry")


def at(minutes: int) -> Any:
    return timezone.now() - timedelta(hours=1) + timedelta(minutes=minutes)


def turn(conversation: Conversation, minute: int, author: str, text: str, **fields: Any) -> Turn:
    created = Turn.objects.create(conversation=conversation, author=author, text=text, **fields)
    # auto_now_add ignores a given time: set it after, as the thread's clock.
    Turn.objects.filter(pk=created.pk).update(created_at=at(minute))
    created.refresh_from_db()
    return created


@pytest.fixture
def version(olivia_operator: User) -> PromptVersion:
    return PromptVersion.objects.create(name="Friendly v3", system_prompt="Be kind.")


@pytest.fixture
def thread(settings: Any, tmp_path: Any, alice_agent: User, version: PromptVersion) -> Conversation:
    """Alice asks, the bot answers from two articles, an agent takes over and attaches a file,
    a colleague notes something in between, and the customer rates the conversation."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    article = Article.objects.create(slug="warranty", title="Warranty terms", body="Two years.")
    customer = Customer.objects.create(display_name="Alice Example")
    conversation = Conversation.objects.create(
        customer=customer,
        status="resolved",
        rating=4,
        rating_comment="Quick, thanks",
        rated_at=at(30),
    )
    turn(conversation, 1, "customer", "My kettle broke.\nWhat now?")
    turn(
        conversation,
        2,
        "bot",
        "See **returns** [1] and the warranty [2].",
        status="done",
        model="gpt-test",
        prompt_tokens=812,
        completion_tokens=95,
        prompt_version=version,
        sources=[
            {"n": 1, "title": "Returns", "url": "https://help.example/returns"},
            {"n": 2, "title": "Warranty terms", "url": "", "article_id": article.pk},
        ],
    )
    turn(conversation, 3, "system", "Anna joined the conversation")
    agent_turn = turn(conversation, 5, "agent", "Here is the label.", agent=alice_agent)
    Attachment.objects.create(
        turn=agent_turn,
        file=ContentFile(b"%PDF-1.4", name="label.pdf"),
        name="label.pdf",
        content_type="application/pdf",
        size=8,
    )
    note = Note.objects.create(conversation=conversation, author=alice_agent, text="VIP customer")
    Note.objects.filter(pk=note.pk).update(created_at=at(4))
    return conversation


def test_it_shows_the_thread_as_a_chat_with_authors_times_and_text(olivia_operator, thread):
    soup = soup_of(logged_in(olivia_operator).get(change_url(thread)))
    shown = [
        (
            e["data-kind"],
            e.select_one(".transcript__author").get_text(),
            e.select_one(".transcript__text").get_text(),
        )
        for e in entries(soup)
    ]
    assert shown == [
        ("customer", "Alice Example", "My kettle broke.\nWhat now?"),
        ("bot", "Bot", "See **returns** [1] and the warranty [2]."),
        ("system", "System", "Anna joined the conversation"),
        ("note", "Anna", "VIP customer"),
        ("agent", "Anna", "Here is the label."),
    ]
    times = [e.select_one("time.transcript__time")["datetime"] for e in entries(soup)]
    assert times == sorted(times) and all(t.startswith(str(at(0).year)) for t in times)
    # Bot and agent text is Markdown, drawn by the page's sanitiser; the customer's stays text.
    assert [e.select_one(".transcript__text").has_attr("data-markdown") for e in entries(soup)] == [
        False,
        True,
        False,
        False,
        True,
    ]
    # No form for the turns any more: the 80 px text column and its row headers are gone.
    assert soup.select("#turns-group") == [] and soup.select(".inline-group") == []


def test_it_links_sources_to_the_article_and_never_shows_them_as_json(olivia_operator, thread):
    html = logged_in(olivia_operator).get(change_url(thread)).content.decode()
    soup = BeautifulSoup(html, "html.parser")
    bot = entries(soup)[1]
    links = [(a.get_text(), a["href"]) for a in bot.select(".transcript__sources a")]
    article = Article.objects.get(slug="warranty")
    assert links == [
        ("[1] Returns", "https://help.example/returns"),
        ("[2] Warranty terms", f"/admin/knowledge/article/{article.pk}/change/"),
    ]
    assert '"title"' not in html and "&quot;title&quot;" not in html and "article_id" not in html


def test_it_links_the_replys_prompt_version_to_the_studio(olivia_operator, thread, version):
    soup = soup_of(logged_in(olivia_operator).get(change_url(thread)))
    bot = entries(soup)[1]
    link = bot.select_one("a.transcript__version")
    assert link.get_text() == "Friendly v3"
    assert link["href"] == f"/admin/studio/promptversion/{version.pk}/change/"
    details = bot.select_one(".transcript__details").get_text(" ", strip=True)
    assert "gpt-test" in details and "812 + 95 tokens" in details


def test_it_marks_internal_notes_among_the_messages_by_time(olivia_operator, thread):
    soup = soup_of(logged_in(olivia_operator).get(change_url(thread)))
    [note] = [e for e in entries(soup) if e["data-kind"] == "note"]
    assert note.select_one(".transcript__badge--note").get_text() == "Internal note"
    kinds = [e["data-kind"] for e in entries(soup)]
    assert kinds.index("note") == kinds.index("agent") - 1  # written before the agent's reply
    # Notes are the only marked ones.
    assert len(soup.select(".transcript__badge--note")) == 1


def test_it_links_attachments_and_shows_rating_and_comment(olivia_operator, thread):
    soup = soup_of(logged_in(olivia_operator).get(change_url(thread)))
    agent = entries(soup)[-1]
    [file_link] = agent.select(".transcript__files a")
    attachment = Attachment.objects.get()
    assert file_link["href"] == f"/chat/attachments/{attachment.pk}/"
    assert "label.pdf" in file_link.get_text()
    rating = soup.select_one(".transcript__rating")
    assert "Rated 4/5" in rating.get_text() and "★★★★" in rating.get_text()
    assert "★★★★★" not in rating.get_text()
    assert rating.select_one(".transcript__comment").get_text() == "Quick, thanks"


def test_it_marks_replies_that_could_not_answer_failed_or_are_still_being_written(
    olivia_operator,
):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    turn(conversation, 1, "customer", "Can you fix my boiler?")
    turn(conversation, 2, "bot", "I can't answer that.", status="done", abstained=True)
    turn(conversation, 3, "bot", "", status="failed", error_code="timeout")
    turn(conversation, 4, "bot", "Let me", status="streaming")
    turn(conversation, 5, "bot", "never written", status="withdrawn")
    turn(conversation, 6, "bot", "All good", status="done")
    soup = soup_of(logged_in(olivia_operator).get(change_url(conversation)))
    marks = [
        [b.get_text() for b in e.select(".transcript__badge--warn")]
        for e in entries(soup)
        if e["data-kind"] == "bot"
    ]
    assert marks == [["Couldn't answer"], ["Failed (timeout)"], ["Being written"], []]
    assert "never written" not in soup.get_text()


def test_it_shows_a_hostile_message_as_text_never_as_markup(olivia_operator):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    turn(conversation, 1, "customer", HOSTILE)
    turn(conversation, 2, "agent", HOSTILE)
    Note.objects.create(conversation=conversation, text=HOSTILE)
    html = logged_in(olivia_operator).get(change_url(conversation)).content.decode()
    assert '<img src=x onerror="alert(1)">' not in html and "<script>alert(2)" not in html
    assert html.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 3
    soup = BeautifulSoup(html, "html.parser")
    assert soup.select("#transcript img") == [] and soup.select("#transcript script") == []
    assert [e.select_one(".transcript__text").get_text() for e in entries(soup)] == [HOSTILE] * 3


def test_it_links_to_the_inbox_only_for_staff_who_work_it(alice_agent, thread):
    agent_soup = soup_of(logged_in(alice_agent).get(change_url(thread)))
    [link] = agent_soup.select("a.transcript-link")
    assert (link.get_text(), link["href"]) == (
        "Open in inbox",
        f"/agent/conversations/{thread.pk}/",
    )

    reader = reader_with("view_conversation", "view_turn")
    reader_soup = soup_of(logged_in(reader).get(change_url(thread)))
    assert reader_soup.select("a.transcript-link") == []
    assert len(entries(reader_soup)) == 4  # reads the messages, just no inbox to open


def reader_with(*codenames: str) -> User:
    reader = personas.make_user("reader_" + "_".join(codenames), "Rita", None)
    reader.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=reader.pk)


def test_it_shows_messages_and_notes_only_to_staff_who_may_view_them(thread):
    """As the turn and note inlines did: viewing a conversation is not viewing its messages
    (conversations.view_turn) nor the team's notes (inbox.view_note)."""
    kinds = {}
    for codenames in [
        ("view_conversation",),
        ("view_conversation", "view_note"),
        ("view_conversation", "view_turn", "view_note"),
    ]:
        page = logged_in(reader_with(*codenames)).get(change_url(thread))
        kinds[codenames] = [e["data-kind"] for e in entries(soup_of(page))]
    assert kinds == {
        ("view_conversation",): [],
        ("view_conversation", "view_note"): ["note"],
        ("view_conversation", "view_turn", "view_note"): [
            "customer",
            "bot",
            "system",
            "note",
            "agent",
        ],
    }


def test_it_names_the_prompt_version_without_a_link_for_staff_outside_the_studio(
    alice_agent, thread
):
    soup = soup_of(logged_in(alice_agent).get(change_url(thread)))
    bot = entries(soup)[1]
    assert "Prompt Friendly v3" in bot.select_one(".transcript__details").get_text(" ", strip=True)
    assert bot.select("a.transcript__version") == []
    # Agents may view articles: the source without a public URL still links to its admin page.
    assert len(bot.select(".transcript__sources a")) == 2


def test_staff_without_the_view_permission_get_403_and_no_transcript(oscar_outsider, thread):
    response = logged_in(oscar_outsider).get(change_url(thread))
    assert response.status_code == 403
    assert b"VIP customer" not in response.content and b"kettle" not in response.content


def test_a_customer_is_sent_to_the_login_not_shown_a_transcript(client, thread):
    response = client.get(change_url(thread))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_inbox_links_back_to_the_admin_only_for_users_who_may_view_it(alice_agent, thread):
    inbox_url = f"/agent/conversations/{thread.pk}/"
    soup = soup_of(logged_in(alice_agent).get(inbox_url))
    [link] = soup.select("a.transcript-in-admin")
    assert (link.get_text(), link["href"]) == ("Transcript in admin", change_url(thread))

    inbox_only = personas.make_user("ivan_inbox", "Ivan", None)
    inbox_only.user_permissions.add(Permission.objects.get(codename="work_inbox"))
    soup = soup_of(logged_in(inbox_only).get(inbox_url))
    assert soup.select("a.transcript-in-admin") == []
    assert logged_in(inbox_only).get(change_url(thread)).status_code == 403


def test_the_studio_version_page_lists_its_conversations_in_the_admin(
    olivia_operator, thread, version
):
    client = logged_in(olivia_operator)
    other = Conversation.objects.create(customer=Customer.objects.create(display_name="Other"))
    turn(other, 1, "bot", "From no version", status="done")
    soup = soup_of(client.get(f"/admin/studio/promptversion/{version.pk}/change/"))
    [link] = [
        a for a in soup.select("a") if a.get_text() == "Conversations this version replied in"
    ]
    assert link["href"] == f"/admin/conversations/conversation/?prompt_version={version.pk}"
    listed = client.get(link["href"]).context["cl"].result_list
    assert [c.pk for c in listed] == [thread.pk]
    # A version that replied nowhere lists nothing; a malformed one filters nothing, no error.
    changelist = "/admin/conversations/conversation/"
    nowhere = client.get(changelist, {"prompt_version": "999999"})
    assert list(nowhere.context["cl"].result_list) == []
    malformed = client.get(changelist, {"prompt_version": "1 OR 1=1"})
    assert malformed.status_code == 200 and len(malformed.context["cl"].result_list) == 2


def test_it_renders_200_turns_and_notes_in_a_bounded_number_of_queries(
    olivia_operator, alice_agent, version, django_assert_max_num_queries
):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    for n in range(100):
        Turn.objects.create(conversation=conversation, author="customer", text=f"Question {n}")
        Turn.objects.create(
            conversation=conversation,
            author="agent" if n % 2 else "bot",
            agent=alice_agent if n % 2 else None,
            text=f"Answer {n}",
            status="" if n % 2 else "done",
            prompt_version=None if n % 2 else version,
            sources=[{"n": 1, "title": "Returns", "url": "https://help.example/returns"}],
        )
        Note.objects.create(conversation=conversation, author=alice_agent, text=f"Note {n}")
    client = logged_in(olivia_operator)
    with django_assert_max_num_queries(12):
        soup = soup_of(client.get(change_url(conversation)))
    assert len(entries(soup)) == 300
