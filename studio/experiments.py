"""A/B experiments: which prompt version a conversation gets while an experiment runs.

Assignment is sticky: decided at a conversation's first bot reply from a hash of the
experiment and the conversation (so it is also reproducible), stored, and kept for the
conversation's life while the experiment runs. Statistics and the verdict build on the stored
assignments.
"""

from __future__ import annotations

import hashlib
import uuid

from django.db import IntegrityError, transaction

from conversations.models import Conversation
from support_bot import config_cache

from .models import Experiment, ExperimentAssignment, PromptVersion


def bucket(experiment_id: int, conversation_id: uuid.UUID | str) -> int:
    """0-99, uniform and stable for an experiment and a conversation."""
    digest = hashlib.sha256(f"{experiment_id}:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


@config_cache.cached
def running_experiment() -> Experiment | None:
    """The running experiment with both versions (shared by the process's threads: don't change
    it), read once per change in each process (support_bot.config_cache)."""
    return (
        Experiment.objects.select_related("version_a", "version_b")
        .filter(status=Experiment.Status.RUNNING)
        .first()
    )


def arm_for(conversation_id: uuid.UUID | str) -> PromptVersion | None:
    """The version this conversation gets from the running experiment, or None when no
    experiment runs (the active version then answers)."""
    # The running experiment first: with none (the usual case) there is no query.
    experiment = running_experiment()
    if experiment is None:
        return None
    existing = (
        ExperimentAssignment.objects.select_related("version")
        .filter(conversation_id=conversation_id)
        .first()
    )
    if existing is not None:
        # In an earlier, stopped experiment: back to the active version.
        return existing.version if existing.experiment_id == experiment.pk else None
    started = Conversation.objects.filter(pk=conversation_id).values_list("created_at", flat=True)
    if not started or started[0] < experiment.started_at:
        return None  # only conversations that began during the experiment take part
    arm = "b" if bucket(experiment.pk, conversation_id) < experiment.percent_b else "a"
    version = experiment.version_b if arm == "b" else experiment.version_a
    try:
        with transaction.atomic():
            ExperimentAssignment.objects.create(
                experiment=experiment, conversation_id=conversation_id, arm=arm, version=version
            )
    except IntegrityError:  # assigned by a concurrent reply of the same conversation
        return arm_for(conversation_id)
    return version
