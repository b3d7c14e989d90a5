"""Prompt-version workflows across rows: drafts, publishing, activation and rollback (with the
audit trail in Activation), and the version the bot uses.

The bot reads the active version once a reply (`active_version()`, through the process's
configuration cache, support_bot.config_cache), so an activation or a rollback takes effect
from the next turn in every web and worker process.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from support_bot.broker import BROKER_DOWN

from . import evaluation
from .models import Activation, EvalRun, PromptVersion, TestSet
from .selectors import active_version
from .tasks import run_evaluation

logger = logging.getLogger(__name__)

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
    """The evaluation gate (evaluation.gate): None when the version may go live, or why not
    (it scored worse than the active version)."""
    return evaluation.gate(version)


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


def ensure_default_version(by: User = None) -> PromptVersion:
    """A "Default" published version from today's settings, created and activated when no
    version is active (for setup_demo and new installs). Returns the active version."""
    current = active_version()
    if current is not None:
        return current
    # The other fields' defaults are the settings too (models.default_*).
    version = create_draft(by=by, name="Default", system_prompt=settings.SYSTEM_PROMPT)
    publish(version, by=by)
    activate(version, by=by, reason="Default version from the settings", allow_worse=True)
    return version


# --- Evaluation runs ---------------------------------------------------------------------------


NOT_QUEUED = "The run could not be queued: the task queue can't be reached. Start it again."


def start_run(version: PromptVersion, test_set: TestSet, by: Any) -> EvalRun:
    """Queue a run of this version over this test set (the task starts after commit).

    With the broker unreachable the run is stored as failed, saying so, rather than left
    queued for a task that never comes, and EvaluationError tells the caller."""
    total = test_set.cases.count()
    if total == 0:
        raise evaluation.EvaluationError(f"'{test_set}' has no cases yet.")
    not_queued: list[Exception] = []

    def queue(run_id: int) -> None:
        try:
            run_evaluation.delay(run_id)
        except BROKER_DOWN as error:
            logger.warning("evaluation run %s not queued: %s", run_id, error)
            EvalRun.objects.filter(pk=run_id).update(
                status=EvalRun.Status.FAILED, error=NOT_QUEUED, finished_at=timezone.now()
            )
            not_queued.append(error)

    with transaction.atomic():
        run = EvalRun.objects.create(
            version=version,
            test_set=test_set,
            total=total,
            started_by=by if getattr(by, "pk", None) else None,
        )
        run_id = run.pk
        transaction.on_commit(lambda: queue(run_id))
    if not_queued:
        raise evaluation.EvaluationError(NOT_QUEUED)
    return run
