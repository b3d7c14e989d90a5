"""Transcripts in the admin for the team: filters, exports, and who may do what."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import roles
from conversations.models import Conversation, Customer, Turn
from inbox.models import Note

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/conversations/conversation/"


def staff(username: str, group: str | None = None) -> User:
    user = User.objects.create_user(username, password="x", is_staff=True, first_name=username)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def olivia_operator() -> User:
    return staff("olivia", roles.OPERATORS)


@pytest.fixture
def anna_agent() -> User:
    return staff("anna", roles.AGENTS)


@pytest.fixture
def oscar_outsider() -> User:
    return staff("oscar")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def conversation(name: str, **fields: object) -> Conversation:
    customer = Customer.objects.create(display_name=name)
    convo = Conversation.objects.create(customer=customer, **fields)
    Turn.objects.create(conversation=convo, author="customer", text=f"Hello from {name}")
    Turn.objects.create(
        conversation=convo,
        author="bot",
        text="Here is what I found [1]",
        status="done",
        sources=[{"n": 1, "title": "Returns", "url": "https://help.example/returns"}],
    )
    return convo


def shown(page) -> set[str]:  # type: ignore[no-untyped-def]
    return {c.customer.display_name for c in page.context["cl"].result_list}


def test_it_gives_agents_and_operators_their_permissions_and_nothing_more(
    anna_agent, olivia_operator
):
    assert anna_agent.has_perm("conversations.work_inbox")
    assert anna_agent.has_perm("conversations.write_note")
    assert not anna_agent.has_perm("conversations.export_conversations")
    assert not anna_agent.has_perm("knowledge.change_article")
    assert olivia_operator.has_perm("conversations.export_conversations")
    assert olivia_operator.has_perm("knowledge.change_article")
    assert olivia_operator.has_perm("conversations.change_escalationrule")
    assert olivia_operator.has_perm("inbox.add_cannedresponse")


def test_it_filters_transcripts_by_escalation_rating_and_assignee(olivia_operator, anna_agent):
    conversation("Calm Carla")
    conversation("Escalated Erik", escalated_at=timezone.now(), escalation_reason="angry")
    conversation("Rated Rosa", status="resolved", rating=2, assignee=anna_agent)
    client = logged_in(olivia_operator)
    assert shown(client.get(CHANGELIST, {"escalated": "yes"})) == {"Escalated Erik"}
    assert shown(client.get(CHANGELIST, {"escalated": "no"})) == {"Calm Carla", "Rated Rosa"}
    assert shown(client.get(CHANGELIST, {"rating": "2"})) == {"Rated Rosa"}
    assert shown(client.get(CHANGELIST, {"rating": "none"})) == {"Calm Carla", "Escalated Erik"}
    assert shown(client.get(CHANGELIST, {"assignee__id__exact": anna_agent.pk})) == {"Rated Rosa"}
    assert shown(client.get(CHANGELIST, {"escalation_reason__exact": "angry"})) == {
        "Escalated Erik"
    }
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert len(shown(client.get(CHANGELIST, {"created_at__gte": since}))) == 3


def export(client: Client, action: str, conversations: list[Conversation]):  # type: ignore[no-untyped-def]
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(c.pk) for c in conversations]},
    )


def body(response) -> str:  # type: ignore[no-untyped-def]
    return b"".join(response.streaming_content).decode()


def test_it_exports_the_selected_conversations_as_csv_one_row_per_message(olivia_operator):
    carla = conversation("Carla")
    conversation("Not selected")
    Turn.objects.create(conversation=carla, author="customer", text="=HYPERLINK(\"http://x\")")
    response = export(logged_in(olivia_operator), "export_csv", [carla])
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [row["text"] for row in rows] == [
        "Hello from Carla",
        "Here is what I found [1]",
        "'=HYPERLINK(\"http://x\")",  # a formula is neutralised, not executed by a spreadsheet
    ]
    assert {row["conversation_id"] for row in rows} == {str(carla.pk)}
    assert rows[1]["sources"] == "Returns <https://help.example/returns>"


def test_it_exports_jsonl_with_messages_notes_and_rating(olivia_operator, anna_agent):
    rosa = conversation("Rosa", status="resolved", rating=4, rating_comment="Quick, thanks")
    Note.objects.create(conversation=rosa, author=anna_agent, text="Refund approved")
    response = export(logged_in(olivia_operator), "export_jsonl", [rosa])
    lines = body(response).splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["id"] == str(rosa.pk) and record["rating"] == 4
    assert record["rating_comment"] == "Quick, thanks"
    assert [m["author"] for m in record["messages"]] == ["customer", "bot"]
    assert record["messages"][1]["sources"][0]["title"] == "Returns"
    [note] = record["notes"]
    assert (note["author"], note["text"]) == ("anna", "Refund approved")


def test_it_exports_many_conversations_in_a_constant_number_of_queries(olivia_operator):
    client = logged_in(olivia_operator)
    few = [conversation(f"Few {i}") for i in range(2)]
    with CaptureQueriesContext(connection) as small:
        body(export(client, "export_jsonl", few))
    many = few + [conversation(f"Many {i}") for i in range(20)]
    with CaptureQueriesContext(connection) as large:
        assert len(body(export(client, "export_jsonl", many)).splitlines()) == 22
    assert len(large.captured_queries) == len(small.captured_queries)


def test_it_offers_exports_only_to_those_allowed_to_export(anna_agent, olivia_operator):
    carla = conversation("Carla")
    agent_page = logged_in(anna_agent).get(CHANGELIST)
    assert agent_page.status_code == 200  # agents review transcripts
    assert "export_csv" not in agent_page.content.decode()
    response = export(logged_in(anna_agent), "export_csv", [carla])
    assert not hasattr(response, "streaming_content")  # refused: the changelist again
    assert "export_csv" in logged_in(olivia_operator).get(CHANGELIST).content.decode()


def test_it_shows_an_outsider_and_a_customer_no_transcripts(oscar_outsider, alice):
    conversation("Carla")
    assert logged_in(oscar_outsider).get(CHANGELIST).status_code == 403
    response = Client().get(CHANGELIST)  # a customer has a visitor cookie, not a staff login
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_it_shows_an_agent_the_transcript_with_its_notes_read_only(anna_agent):
    carla = conversation("Carla")
    Note.objects.create(conversation=carla, author=anna_agent, text="Customer is a reseller")
    page = logged_in(anna_agent).get(f"/admin/conversations/conversation/{carla.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Customer is a reseller" in html and "Hello from Carla" in html
    assert "notes-0-text" not in html  # shown, not editable


def test_it_shows_what_the_bot_used_and_cost_in_a_conversation(olivia_operator):
    from decimal import Decimal

    carla = conversation("Carla")
    Turn.objects.filter(conversation=carla, author="bot").update(
        prompt_tokens=1200, completion_tokens=80, cost=Decimal("0.0042")
    )
    page = logged_in(olivia_operator).get(f"/admin/conversations/conversation/{carla.pk}/change/")
    expected = "replies: 1, tokens: 1,200 prompt + 80 completion, cost: 0.0042"
    assert expected in page.content.decode()


def test_it_creates_the_demo_team_with_their_roles_once(settings, tmp_path):
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    call_command("setup_demo", verbosity=0)
    password = (tmp_path / "demo-credentials.txt").read_text().split()[-1]
    call_command("setup_demo", verbosity=0)  # again: same users, same password
    anna, olivia, demo = (User.objects.get(username=n) for n in ("anna", "olivia", "demo"))
    assert anna.check_password(password) and olivia.check_password(password)
    assert anna.has_perm("conversations.work_inbox") and not anna.is_superuser
    assert olivia.has_perm("conversations.export_conversations")
    assert demo.is_superuser
    assert User.objects.count() == 3


def test_it_turns_selected_conversations_into_test_cases_for_operators_only(
    olivia_operator, anna_agent
):
    from studio.models import TestCase

    carla = conversation("Carla")
    response = export(logged_in(anna_agent), "make_test_cases", [carla])
    assert not TestCase.objects.exists()  # agents may not
    response = export(logged_in(olivia_operator), "make_test_cases", [carla])
    assert response.status_code == 302
    case = TestCase.objects.get()
    assert case.message == "Hello from Carla" and case.test_set.name == "From conversations"
    assert case.source_conversation == carla
