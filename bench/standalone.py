"""Django for a benchmark that runs on its own: the project's settings (support_bot/settings.py)
on an in-memory SQLite database, with the environment overrides the benchmark gives. Nothing
else runs: a configuration change announced to Redis finds none and is only logged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup(**env: str) -> None:
    if str(ROOT) not in sys.path:  # run as a script: make the project importable
        sys.path.insert(0, str(ROOT))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "support_bot.settings",
            "DEBUG": "1",
            "DATABASE_URL": "sqlite://:memory:",
            # Nothing listens here: the benchmarks read no configuration through Redis.
            "REDIS_URL": "redis://127.0.0.1:9/0",
            # Configuration changes would be announced to a Redis nobody listens to: not news.
            "LOG_LEVEL": "CRITICAL",
            **env,
        }
    )
    import django

    django.setup()
