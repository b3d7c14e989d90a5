"""How Support Bot's processes are started: one definition for `make run`, tests, benchmarks
(docker-compose.yml spells out the same commands for the production stack)."""

from __future__ import annotations

import sys

# Reply generation is I/O-bound streaming: a thread pool, one reply a thread.
REPLY_QUEUES = "replies,default"
# The same in docker-compose.yml and the Dockerfile.
WEB_SOCKET_OPTIONS = ("--ws-max-size", "65536", "--ws-per-message-deflate", "false")


def web_command(host: str, port: int | str, *, processes: int = 1) -> list[str]:
    """The ASGI server: Django for HTTP, Channels for the websockets. Without per-message
    deflate: a socket's compression contexts cost more memory than the rest of it (77 against
    38 KB an idle socket, bench/load.py --idle 5000), for frames of a few hundred bytes."""
    return [
        sys.executable, "-m", "uvicorn", "support_bot.asgi:application",
        "--host", host, "--port", str(port), "--workers", str(processes),
        *WEB_SOCKET_OPTIONS, "--no-access-log",
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
