"""The settings module only declares: importing it starts nothing and writes nothing; the
entry points prepare the embedded default (support_bot/local.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from support_bot import embedded_redis
from tests.conftest import ROOT


def plain_env(var_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        SUPPORT_BOT_VAR_DIR=str(var_dir), DEBUG="1", DJANGO_SETTINGS_MODULE="support_bot.settings"
    )
    return env


def test_importing_the_settings_starts_no_redis_and_writes_nothing(tmp_path):
    var_dir = tmp_path / "var"
    printed = subprocess.run(
        [sys.executable, "-c", "from support_bot import settings; print(settings.REDIS_URL)"],
        cwd=ROOT,
        env=plain_env(var_dir),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == f"unix://{var_dir / 'redis' / 'redis.sock'}"
    assert not var_dir.exists()


def test_manage_py_starts_the_embedded_redis_the_settings_name(tmp_path):
    var_dir = tmp_path / "var"
    try:
        subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=ROOT,
            env=plain_env(var_dir),
            capture_output=True,
            check=True,
        )
        assert embedded_redis._answers(var_dir / "redis" / "redis.sock")
    finally:
        embedded_redis.stop(var_dir / "redis")


def test_a_model_budget_below_zero_stops_the_start_and_says_why(tmp_path):
    env = {**plain_env(tmp_path / "var"), "OPENAI_REQUESTS_PER_MIN": "-100"}
    started = subprocess.run(
        [sys.executable, "-c", "from support_bot import settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert started.returncode != 0
    assert "OPENAI_REQUESTS_PER_MIN" in started.stderr and "0 (no limit)" in started.stderr
