"""Notes and canned responses moved from the conversations app to the inbox: their rows, ids
and the permissions granted on them survive the migration."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from conversations.models import EscalationRule
from inbox.models import CannedResponse, Note

BEFORE = [("conversations", "0007_unresolved_questions"), ("inbox", None)]


@pytest.mark.django_db(transaction=True)
def test_notes_and_canned_responses_keep_their_rows_and_permissions_in_the_inbox():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE[:1]).apps
    customer = old.get_model("conversations", "Customer").objects.create(display_name="Alice")
    conversation = old.get_model("conversations", "Conversation").objects.create(customer=customer)
    note = old.get_model("conversations", "Note").objects.create(
        conversation=conversation, text="She was promised a refund."
    )
    canned = old.get_model("conversations", "CannedResponse").objects.create(
        shortcut="refund", title="Refund", text="Your refund is on its way."
    )
    Permission = old.get_model("auth", "Permission")
    group = old.get_model("auth", "Group").objects.create(name="Note readers")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="conversations", codename="view_note")
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    moved = Note.objects.get(pk=note.pk)
    assert (moved.conversation_id, moved.text) == (conversation.pk, "She was promised a refund.")
    assert CannedResponse.objects.get(pk=canned.pk).shortcut == "refund"
    granted = Group.objects.get(name="Note readers").permissions.get()
    assert (granted.content_type.app_label, granted.codename) == ("inbox", "view_note")


@pytest.mark.django_db
def test_migrating_another_database_writes_its_rows_there_not_in_the_default_one(
    second_database,
):
    """`migrate --database other`: the data migrations (default escalation rules, moved content
    types, read markers) use the database being migrated."""
    default_rules = EscalationRule.objects.count()

    executor = MigrationExecutor(connections[second_database])
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert EscalationRule.objects.using(second_database).filter(kind="abstain_streak").exists()
    assert EscalationRule.objects.count() == default_rules
