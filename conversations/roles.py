"""The team's roles as Django groups. Kept in step with this table after every migrate, so a
new permission reaches its role without a hand-made data migration.

- Agents work the inbox: view conversations, take over, reply, write notes, snooze, resolve,
  reopen; they read canned responses and articles.
- Operators do all that, and tune the bot: articles, escalation rules, canned responses,
  business hours, the chat's first screen (greeting, suggested questions), exports, and the
  prompt studio (versions, activation, playground, evaluations, experiments, prices,
  fine-tuning exports).
- Admins are superusers.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db.models import Q

AGENTS = "Agents"
OPERATORS = "Operators"

AGENT_PERMISSIONS = (
    "conversations.work_inbox",
    "conversations.write_note",
    "conversations.resolve_conversation",
    "conversations.view_conversation",
    "conversations.view_turn",
    "conversations.view_customer",
    "inbox.view_note",
    "inbox.view_cannedresponse",
    "inbox.view_label",
    "knowledge.view_article",
)
OPERATOR_PERMISSIONS = AGENT_PERMISSIONS + (
    "conversations.export_conversations",
    *(
        f"{app}.{action}_{model}"
        for app, model in (
            ("knowledge", "article"),
            ("knowledge", "examplequestion"),
            ("conversations", "escalationrule"),
            ("inbox", "cannedresponse"),
            ("inbox", "label"),
            ("conversations", "businesshours"),
            ("conversations", "greeting"),
            ("conversations", "suggestedquestion"),
            ("studio", "promptversion"),
            ("studio", "testset"),
            ("studio", "testcase"),
            ("studio", "experiment"),
            ("studio", "modelprice"),
        )
        for action in ("add", "change", "delete", "view")
    ),
    "studio.activate_promptversion",
    "studio.use_playground",
    "studio.run_evaluation",
    "studio.export_finetune",
    "studio.view_activation",
    "studio.view_evalrun",
    "studio.add_evalrun",
    "studio.view_evalresult",
    "conversations.view_unresolvedquestion",
)
ROLES = {AGENTS: AGENT_PERMISSIONS, OPERATORS: OPERATOR_PERMISSIONS}


def permissions(names: tuple[str, ...]) -> list[Permission]:
    query = Q(pk__in=[])
    for name in names:
        app_label, codename = name.split(".")
        query |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(query))
    if len(found) != len(set(names)):
        have = {f"{p.content_type.app_label}.{p.codename}" for p in found}
        raise LookupError(f"permissions missing: {sorted(set(names) - have)}")
    return found


def ensure_roles(**_: Any) -> None:
    """Create the groups and give them exactly their permissions (a post_migrate handler)."""
    for name, names in ROLES.items():
        group, _created = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions(names))
