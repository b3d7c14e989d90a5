"""Prompt-version workflows across rows: drafts, publishing, activation and rollback (with the
audit trail in Activation), and the version the bot uses.

The bot reads the active version once a reply (`active_version()`, through the process's
configuration cache, support_bot.config_cache), so an activation or a rollback takes effect
from the next turn in every web and worker process.
"""

from __future__ import annotations

import datetime
import importlib
import json
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from support_bot import config_cache

from .models import Activation, PromptVersion

User = AbstractBaseUser | AnonymousUser | None


class GateBlocked(Exception):
    """The version scored worse than the active one in its last evaluation; activating it
    anyway needs a reason (recorded as an override)."""


class NotPublished(Exception):
    """Only published versions can be activated."""


class NothingToRollBackTo(Exception):
    pass


def _user(by: User) -> Any:
    return by if by is not None and getattr(by, "is_authenticated", False) else None


# --- Drafts and publishing ---------------------------------------------------------------------


def create_draft(
    from_version: PromptVersion | None = None, *, by: User, **fields: Any
) -> PromptVersion:
    """A new draft: a copy of `from_version`'s content (its child) with `fields` changed, or a
    version from `fields` and the built-in defaults."""
    content: dict[str, Any] = {}
    if from_version is not None:
        content = from_version.content()
        content["name"] = from_version.name
    elif "system_prompt" not in fields:
        content["system_prompt"] = settings.SYSTEM_PROMPT
    content.update(fields)
    unknown = set(content) - set(PromptVersion.CONTENT_FIELDS) - {"name"}
    if unknown:
        raise TypeError(f"not prompt-version fields: {sorted(unknown)}")
    version = PromptVersion(
        parent=from_version, state=PromptVersion.State.DRAFT, created_by=_user(by), **content
    )
    version.full_clean()
    version.save()
    return version


def publish(version: PromptVersion, *, by: User) -> PromptVersion:
    """Freeze a draft: from now on its content can't change (PromptVersion.save refuses)."""
    if version.is_published:
        return version
    updated = PromptVersion.objects.filter(pk=version.pk, state=PromptVersion.State.DRAFT).update(
        state=PromptVersion.State.PUBLISHED, published_at=timezone.now()
    )
    version.refresh_from_db()
    if not updated and not version.is_published:
        raise ValidationError(f"Version #{version.pk} could not be published.")
    return version


# --- Activation ------------------------------------------------------------------------------


def gate(version: PromptVersion) -> str | None:
    """The evaluation gate (studio.evaluation.gate): None when the version may go live, or why
    not (it scored worse than the active version). No evaluation module, no gate."""
    try:
        evaluation = importlib.import_module("studio.evaluation")
    except ModuleNotFoundError as exc:
        if exc.name == "studio.evaluation":
            return None
        raise
    check = getattr(evaluation, "gate", None)
    if check is None:
        return None
    result = check(version)
    return str(result) if result else None


def activate(
    version: PromptVersion,
    *,
    by: User,
    reason: str = "",
    allow_worse: bool = False,
    action: str = Activation.Action.ACTIVATE,
) -> Activation:
    """Make `version` the one the bot uses, from the next turn on, and record who, when, why.

    Only a published version can be active. When the evaluation gate objects, activating needs
    a reason (or allow_worse) and is recorded as an override; otherwise GateBlocked is raised.
    """
    reason = (reason or "").strip()
    if not version.is_published:
        raise NotPublished(f"Version #{version.pk} is a draft: publish it first.")
    # A rollback returns to a version known good before: no gate.
    objection = gate(version) if action != Activation.Action.ROLLBACK else None
    if objection and not reason and not allow_worse:
        raise GateBlocked(objection)
    with transaction.atomic():
        # Lock the current active row (if any) so two activations can't interleave.
        current = PromptVersion.objects.select_for_update().filter(is_active=True).first()
        previous = current
        if current is not None and current.pk == version.pk:
            # Already active: recorded again (who, why), keeping what a rollback returns to.
            last = _last_change()
            previous = last.previous if last is not None and last.version_id == version.pk else None
        elif current is not None:
            PromptVersion.objects.filter(pk=current.pk).update(is_active=False)
        PromptVersion.objects.filter(pk=version.pk).update(is_active=True)
        version.is_active = True
        return Activation.objects.create(
            action=action,
            version=version,
            previous=previous,
            by=_user(by),
            reason=reason,
            gate_overridden=bool(objection),
        )


def _last_change() -> Activation | None:
    """The latest change of the active version in the audit trail."""
    changes = (
        Activation.Action.ACTIVATE,
        Activation.Action.ROLLBACK,
        Activation.Action.PROMOTE,
    )
    return (
        Activation.objects.filter(action__in=changes)
        .select_related("version", "previous")
        .order_by("-at", "-id")
        .first()
    )


def rollback(*, by: User, reason: str = "") -> Activation:
    """Back to the version that was active before the current one (per the audit trail: the
    latest change's `previous`). Rolling back twice returns to where it started, like undo and
    redo."""
    last = _last_change()
    if last is None or last.previous is None:
        raise NothingToRollBackTo("No earlier version was active.")
    return activate(
        last.previous,
        by=by,
        reason=reason or f"Rolled back from #{last.version.pk}",
        allow_worse=True,
        action=Activation.Action.ROLLBACK,
    )


def active_version_fresh() -> PromptVersion | None:
    """The active version as the database has it now, past the configuration cache.

    For the evaluation gate (studio.evaluation), which decides whether an operator may
    activate a version by comparing it with the active one: that must be the one active at
    this moment, not the cache's copy, which can lag behind an activation in another process
    (for the rest of a unit of work, or up to config_cache.MAX_AGE_S when its announcement was
    lost). The gate is rare; the query it costs is nothing next to letting a worse version
    through."""
    return PromptVersion.objects.filter(is_active=True).first()


@config_cache.cached
def active_version() -> PromptVersion | None:
    """The active version (shared by the process's threads: don't change it), read once per
    change in each process: an activation elsewhere takes effect from the next reply."""
    return active_version_fresh()


def ensure_default_version(by: User = None) -> PromptVersion:
    """A "Default" published version from today's settings, created and activated when no
    version is active (for setup_demo and new installs). Returns the active version."""
    current = active_version()
    if current is not None:
        return current
    version = create_draft(
        by=by,
        name="Default",
        system_prompt=settings.SYSTEM_PROMPT,
        temperature=settings.OPENAI_TEMPERATURE,
        max_tokens=settings.OPENAI_MAX_TOKENS,
        knowledge_tokens=int(getattr(settings, "KB_PROMPT_TOKENS", 1200)),
    )
    publish(version, by=by)
    activate(version, by=by, reason="Default version from the settings", allow_worse=True)
    return version


# --- Fine-tuning export ----------------------------------------------------------------------


def finetune_examples(
    min_rating: int = 4, since: datetime.date | None = None
) -> Iterator[dict[str, list[dict[str, str]]]]:
    """Resolved conversations rated >= min_rating as chat-format fine-tuning examples:
    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}.

    system: the prompt of the version that answered (the last bot turn's), rendered without
    passages, or the built-in default's; user: the customer's turns; assistant: the bot's and
    the agents' turns (citation markers removed). System notices, failed replies and internal
    notes are never included; consecutive turns of one role are joined; a conversation with no
    assistant turn is skipped.
    """
    from conversations.grounding import strip_citations
    from conversations.models import Conversation, Turn

    from . import runtime

    conversations = Conversation.objects.filter(
        status=Conversation.Status.RESOLVED, rating__gte=min_rating
    )
    if since is not None:
        conversations = conversations.filter(resolved_at__date__gte=since)
    turns = Turn.objects.dialogue().select_related("prompt_version").order_by("id")
    queryset = (
        conversations.select_related("customer")
        .prefetch_related(Prefetch("turns", queryset=turns))
        .order_by("resolved_at", "created_at")
    )
    default = runtime.default_config()
    for conversation in queryset.iterator(chunk_size=200):
        messages: list[dict[str, str]] = []
        version: PromptVersion | None = None
        first_question = ""
        for turn in conversation.turns.all():
            text = turn.text.strip()
            if not text:
                continue
            if turn.author == Turn.Author.CUSTOMER:
                role = "user"
                first_question = first_question or text
            else:
                if turn.author == Turn.Author.BOT and turn.status != Turn.Status.DONE:
                    continue
                role = "assistant"
                text = strip_citations(text)
                if turn.prompt_version is not None:
                    version = turn.prompt_version
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + text
            else:
                messages.append({"role": role, "content": text})
        while messages and messages[-1]["role"] == "user":
            messages.pop()  # nothing answers it: no example to learn from
        if not any(m["role"] == "assistant" for m in messages):
            continue
        template = version.system_prompt if version is not None else default.system_prompt
        system = (
            runtime.render_system_prompt(
                template,
                language=runtime.guess_language(first_question),
                customer_name=conversation.customer.display_name,
            )
            .replace("{passages}", "")
            .strip()
        )
        yield {"messages": [{"role": "system", "content": system}, *messages]}


def finetune_jsonl(min_rating: int = 4, since: datetime.date | None = None) -> Iterator[str]:
    """finetune_examples as JSON Lines (one example a line, each ending in a newline)."""
    for example in finetune_examples(min_rating, since):
        yield json.dumps(example, ensure_ascii=False) + "\n"
