"""`make run`: the whole app on one machine, with nothing to install or configure.

Starts the embedded Redis (unless REDIS_URL is set), migrates, loads the demo, then runs the
ASGI server and a Celery worker as children. Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support_bot.processes import web_command, worker_command

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")
    var_dir = Path(env.get("SUPPORT_BOT_VAR_DIR") or ROOT / "var").resolve()
    env["SUPPORT_BOT_VAR_DIR"] = str(var_dir)
    if not env.get("REDIS_URL"):
        from support_bot import embedded_redis

        env["REDIS_URL"] = embedded_redis.ensure_running(var_dir / "redis")
        print(f"Embedded Redis at {env['REDIS_URL']}")
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    python = sys.executable

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True)

    manage("migrate", "--noinput", "-v", "0")
    manage("setup_demo")

    names = ["web server (uvicorn)", "Celery worker"]
    children = [
        subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        for command in (
            web_command(host, port),
            worker_command(env.get("WORKER_THREADS", "16")),
        )
    ]
    print(f"\nSupport Bot is running: open http://{host}:{port}/chat/   (Ctrl-C stops it)\n")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in zip(names, children, strict=True):
            if child.poll() is not None:
                print(f"The {name} exited with code {child.returncode}; stopping.")
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.2)

    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    from support_bot import embedded_redis

    if embedded_redis.started_here is not None:  # never one that was running before us
        embedded_redis.stop(embedded_redis.started_here)
    print("Stopped.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
