"""Labels (issue 17 point 5): operators manage them in the admin; agents put existing ones on
conversations through /agent/api/conversations/<id>/labels/; rows show them, live."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction

from inbox.models import ConversationLabel, Label
from tests import personas
from tests.conftest import receive_until
from tests.inbox.test_inbox_socket import agent_socket
from tests.inbox.test_permissions import customer_client, logged_in

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
olivia_operator = personas.olivia_operator
oscar_outsider = personas.oscar_outsider
pending = personas.pending


def labels_url(conversation) -> str:
    return f"/agent/api/conversations/{conversation.pk}/labels/"


def change(client, conversation, method: str, body: object):
    send = client.post if method == "POST" else client.delete
    return send(labels_url(conversation), json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_it_adds_and_removes_an_existing_label(pending, alice_agent):
    Label.objects.create(name="Billing", colour="#2563eb")
    bug = Label.objects.create(name="Bug", colour="#dc2626")
    client = logged_in(alice_agent)
    response = change(client, pending, "POST", {"label": "billing"})  # by name, any case
    assert response.status_code == 200
    assert [label["name"] for label in response.json()["labels"]] == ["Billing"]
    assert change(client, pending, "POST", {"label": bug.pk}).status_code == 200
    assert change(client, pending, "POST", {"label": bug.pk}).status_code == 200  # again: same
    names = [label["name"] for label in client.get(labels_url(pending)).json()["labels"]]
    assert names == ["Billing", "Bug"]
    assert change(client, pending, "DELETE", {"label": "Billing"}).json()["labels"] == [
        {"id": bug.pk, "name": "Bug", "colour": "#dc2626"}
    ]
    assert ConversationLabel.objects.filter(conversation=pending).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"label": "Refunds"}, 400, "unknown_label"),
        ({"label": 99999}, 400, "unknown_label"),
        ({"label": ""}, 400, "invalid"),
        ({"label": ["Billing"]}, 400, "invalid"),
        ({}, 400, "invalid"),
    ],
)
def test_it_refuses_a_label_that_does_not_exist(pending, alice_agent, body, status, code):
    """Agents pick from the operators' labels; they can't create new ones (as in Chatwoot)."""
    Label.objects.create(name="Billing")
    response = change(logged_in(alice_agent), pending, "POST", body)
    assert response.status_code == status and response.json()["code"] == code
    assert not ConversationLabel.objects.exists()
    assert Label.objects.count() == 1


@pytest.mark.django_db
def test_it_answers_404_for_an_unknown_conversation(alice_agent):
    Label.objects.create(name="Billing")
    url = "/agent/api/conversations/00000000-0000-0000-0000-000000000000/labels/"
    response = logged_in(alice_agent).post(url, '{"label": "Billing"}', "application/json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_it_lets_only_agents_label(pending, oscar_outsider):
    Label.objects.create(name="Billing")
    assert (
        change(logged_in(oscar_outsider), pending, "POST", {"label": "Billing"}).status_code == 403
    )
    customer = customer_client(pending.customer)
    assert change(customer, pending, "POST", {"label": "Billing"}).status_code == 401
    assert not ConversationLabel.objects.exists()


@pytest.mark.django_db
def test_it_keeps_label_names_unique_ignoring_case():
    Label.objects.create(name="Billing")
    with pytest.raises(IntegrityError), transaction.atomic():
        Label.objects.create(name="billing")


@pytest.mark.django_db
def test_operators_manage_labels_in_the_admin_and_agents_cannot(olivia_operator, alice_agent):
    operator = logged_in(olivia_operator)
    response = operator.post(
        "/admin/inbox/label/add/", {"name": "VIP", "colour": "#ca8a04", "description": ""}
    )
    assert response.status_code == 302 and Label.objects.filter(name="VIP").exists()
    refused = operator.post("/admin/inbox/label/add/", {"name": "vip", "colour": "#000000"})
    assert refused.status_code == 200 and Label.objects.count() == 1  # the form says why
    bad_colour = operator.post("/admin/inbox/label/add/", {"name": "Red", "colour": "red"})
    assert bad_colour.status_code == 200 and not Label.objects.filter(name="Red").exists()
    agent = logged_in(alice_agent)
    assert (
        agent.post("/admin/inbox/label/add/", {"name": "Mine", "colour": "#000000"}).status_code
        == 403
    )
    assert agent.get("/agent/api/labels/").json()["labels"][0]["name"] == "VIP"


@pytest.mark.django_db(transaction=True)
async def test_it_sends_the_labelled_row_to_every_agent(pending, alice_agent, bob_agent):
    await database_sync_to_async(Label.objects.create)(name="Billing", colour="#2563eb")
    bob = await agent_socket(bob_agent)
    client = await database_sync_to_async(logged_in)(alice_agent)
    response = await database_sync_to_async(change)(client, pending, "POST", {"label": "Billing"})
    assert response.status_code == 200
    frames = await receive_until(
        bob, lambda f: f["type"] == "inbox.row" and f["row"]["labels"] != []
    )
    assert frames[-1]["row"]["id"] == str(pending.pk)
    assert [label["name"] for label in frames[-1]["row"]["labels"]] == ["Billing"]
    await bob.disconnect()
