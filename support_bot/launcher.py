"""`make run`: the whole app on one machine, with nothing to install or configure.

Starts the embedded Redis (unless REDIS_URL is set), migrates, collects the static files (with
DEBUG=0, which serves the collected ones), loads and indexes the demo, then runs the ASGI
server and a Celery worker as children, and prints the address once both are ready (the worker
has built the knowledge index), so the first question is answered at once.
Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from support_bot import embedded_redis
from support_bot.processes import web_command, worker_command

# What each child prints once it serves: uvicorn, and a Celery worker that has warmed up.
READY_LINES = ("Uvicorn running on", " ready.")
READY_TIMEOUT_S = 300

ROOT = Path(__file__).resolve().parent.parent


STOP_TIMEOUT_S = 10


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")
    # The launcher kills what has not stopped 10 s after Ctrl-C: the worker hands off before.
    env.setdefault("WORKER_SHUTDOWN_GRACE_S", str(STOP_TIMEOUT_S))
    var_dir = Path(env.get("SUPPORT_BOT_VAR_DIR") or ROOT / "var").resolve()
    env["SUPPORT_BOT_VAR_DIR"] = str(var_dir)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = embedded_redis.ensure_running(var_dir / "redis")
        print(f"Embedded Redis at {env['REDIS_URL']}")
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    python = sys.executable

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True)

    manage("migrate", "--noinput", "-v", "0")
    if not _serves_static_from_source(env):
        # Production settings serve the hashed files collectstatic writes (and refuse to start
        # without them): collect them at every start, so they are never missing or stale.
        manage("collectstatic", "--noinput", "-v", "0")
    manage("setup_demo")

    names = ["web server (uvicorn)", "Celery worker"]
    children = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in (
            web_command(host, port),
            worker_command(env.get("WORKER_THREADS", "16")),
        )
    ]
    ready = [
        _relay_output(child, needle) for child, needle in zip(children, READY_LINES, strict=True)
    ]

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    announced = False
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stopping:
        if not announced and all(event.is_set() for event in ready):
            announced = True
            address = f"http://{host}:{port}/chat/"
            print(f"\nSupport Bot is running: open {address}   (Ctrl-C stops it)\n", flush=True)
        elif not announced and time.monotonic() > deadline:
            print(f"Support Bot did not start within {READY_TIMEOUT_S} s; stopping.")
            exit_code, stopping = 1, True
        for name, child in zip(names, children, strict=True):
            if child.poll() is not None:
                print(f"The {name} exited with code {child.returncode}; stopping.")
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.2)

    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    if embedded_redis.started_here is not None:  # never one that was running before us
        embedded_redis.stop(embedded_redis.started_here)
    print("Stopped.")
    return exit_code


def _serves_static_from_source(env: dict[str, str]) -> bool:
    """settings.STATIC_FROM_FINDERS, read from the children's environment."""
    return any(
        env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("DEBUG", "STATIC_FROM_FINDERS")
    )


def _relay_output(child: subprocess.Popen[str], ready_line: str) -> threading.Event:
    """Print a child's output as it comes; the event is set once it printed `ready_line`."""
    ready = threading.Event()

    def relay() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if ready_line in line:
                ready.set()

    threading.Thread(target=relay, daemon=True).start()
    return ready


if __name__ == "__main__":
    sys.exit(main())
