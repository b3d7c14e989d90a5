"""Reading prompt versions: the active one, through the configuration cache or fresh."""

from __future__ import annotations

from support_bot import config_cache

from .models import PromptVersion


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
