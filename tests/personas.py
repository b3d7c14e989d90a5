"""Personas and shared helpers of the inbox tests (no tests here): alice_agent and bob_agent
(Agents), olivia_operator (Operators), oscar_outsider (staff, no group: must see nothing);
customers are conftest's alice and bob. Test modules re-export these fixtures by assignment."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from conversations import services as chat_services
from conversations.models import Conversation


def make_user(username: str, first_name: str, group: str | None) -> User:
    user = User.objects.create_user(
        username, password="pw-not-used-0123", first_name=first_name, is_staff=True
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return User.objects.get(pk=user.pk)  # fresh: no cached permissions


@pytest.fixture
def alice_agent(db: None) -> User:
    return make_user("alice_agent", "Anna", "Agents")


@pytest.fixture
def bob_agent(db: None) -> User:
    return make_user("bob_agent", "Bob", "Agents")


@pytest.fixture
def olivia_operator(db: None) -> User:
    return make_user("olivia_operator", "Olivia", "Operators")


@pytest.fixture
def oscar_outsider(db: None) -> User:
    return make_user("oscar_outsider", "Oscar", None)


@pytest.fixture
def pending(alice_conversation: Conversation) -> Conversation:
    chat_services.post_customer_message(alice_conversation, "c-1", "Where is my parcel?")
    Conversation.objects.filter(pk=alice_conversation.pk).update(
        status=Conversation.Status.PENDING,
        escalated_at=timezone.now(),
        escalation_reason=Conversation.Escalation.CUSTOMER_REQUEST,
    )
    alice_conversation.refresh_from_db()
    assert alice_conversation.customer  # loaded here, for async tests
    return alice_conversation
