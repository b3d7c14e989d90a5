"""How Support Bot's processes are started: one definition for `make run`, tests, benchmarks
(docker-compose.yml spells out the same commands for the production stack)."""

from __future__ import annotations

import sys

# Reply generation is I/O-bound streaming: a thread pool, one reply a thread.
REPLY_QUEUES = "replies,default"


def web_command(host: str, port: int | str, *, processes: int = 1) -> list[str]:
    """The ASGI server: Django for HTTP, Channels for the websockets."""
    return [
        sys.executable, "-m", "uvicorn", "support_bot.asgi:application",
        "--host", host, "--port", str(port), "--workers", str(processes),
        "--ws-max-size", "65536", "--no-access-log",
    ]  # fmt: skip


def worker_command(
    threads: int | str, *, name: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    """A Celery worker that writes replies."""
    command = [
        sys.executable, "-m", "celery", "-A", "support_bot", "worker",
        "-P", "threads", "-c", str(threads), "-Q", REPLY_QUEUES,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", loglevel,
    ]  # fmt: skip
    if name:
        command += ["-n", name]
    return command
