"""Loaded with `-p tests.testenv` before Django's settings are read: the test environment.

The suite runs twice (see Makefile): with nothing else set it uses the embedded default
(SQLite + embedded Redis, kept apart from a development server's under var/test); with
DATABASE_URL and REDIS_URL set it runs on Postgres and Redis.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault(
    "SECRET_KEY", "test-secret-key-that-is-long-enough-for-django-checks-0123456789"
)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
# In-process sockets come from http://127.0.0.1; servers started by tests allow their own port.
os.environ.setdefault("ALLOWED_ORIGINS", "http://127.0.0.1,http://localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("SUPPORT_BOT_VAR_DIR", str(ROOT / "var" / "test"))
os.environ.setdefault("REDIS_KEY_PREFIX", f"sbtest{os.getpid()}:")
os.environ.setdefault("LLM_PROVIDER", "offline")
os.environ.setdefault("OFFLINE_WORD_DELAY_MS", "2")
os.environ.setdefault("STATIC_FROM_FINDERS", "1")

# What the entry points do for the embedded default (support_bot/local.py), before the settings
# are read: the var folder, and the embedded Redis unless REDIS_URL names one.
var_dir = Path(os.environ["SUPPORT_BOT_VAR_DIR"])
var_dir.mkdir(parents=True, exist_ok=True)
if not os.environ.get("REDIS_URL"):
    from support_bot import embedded_redis

    os.environ["REDIS_URL"] = embedded_redis.ensure_running(var_dir / "redis")
