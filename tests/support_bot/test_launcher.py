"""`make run`'s launcher on a fresh var directory: embedded Redis, SQLite, demo data, web and
worker, a real reply over a real websocket, and Ctrl-C stopping every child."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import websockets

from support_bot import embedded_redis
from support_bot.processes import web_command
from tests.conftest import ROOT, ChildProcess, free_port

pytestmark = [
    pytest.mark.worker,
    pytest.mark.default_pass_only(reason="starts its own services, whatever the path"),
]


def start_launcher(env: dict[str, str]) -> ChildProcess:
    """`make run`'s launcher in a child process, its output read as it comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "support_bot.launcher"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    launcher = ChildProcess(process)
    launcher.start_reader()
    return launcher


def launcher_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "SECRET_KEY",
            "DATABASE_NAME",
            "ALLOWED_HOSTS",
            "ALLOWED_ORIGINS",
            "REDIS_KEY_PREFIX",
            "LLM_PROVIDER",
        }
    }
    env.update(
        SUPPORT_BOT_VAR_DIR=str(var_dir),
        PORT=str(port),
        WORKER_THREADS="4",
        PYTHONUNBUFFERED="1",
        OFFLINE_WORD_DELAY_MS="5",
    )
    return env


async def chat_once(base: str, cookie: str, conversation_id: str) -> list[dict]:
    url = base.replace("http://", "ws://") + f"/ws/chat/{conversation_id}/"
    async with websockets.connect(url, origin=base, additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(await ws.recv())["type"] == "conversation"
        await ws.send(
            json.dumps(
                {"type": "message", "client_id": "l-1", "text": "How do I reset my password?"}
            )
        )
        frames = []
        async with asyncio.timeout(30):
            while not frames or frames[-1]["type"] != "reply.done":
                frames.append(json.loads(await ws.recv()))
        return frames


def test_make_run_starts_everything_and_ctrl_c_stops_it(tmp_path):
    port = free_port()
    launcher = start_launcher(launcher_env(tmp_path, port))
    process = launcher.process
    try:
        launcher.wait_for_output("Support Bot is running", timeout=180)
        output = "".join(launcher.output)
        # The address comes once the worker has built the knowledge index and is ready, so the
        # first question is answered at once; the demo was indexed before (setup_demo).
        built = output.index("knowledge index built")
        ready = output.index(" ready.")
        assert built < ready < output.index("Support Bot is running")
        assert "re-indexed" not in output[output.index("Knowledge base:") :]
        assert "Demo team (password " in output and "anna (agent, /agent/)" in output
        assert (tmp_path / "redis" / "redis.sock").exists()
        assert (tmp_path / "db.sqlite3").exists()

        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(f"{base}/chat/", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert page.status == 200
        cookie = page.headers["Set-Cookie"].split(";")[0]
        html = page.read().decode()
        conversation_id = html.split("/ws/chat/")[1].split("/")[0]
        frames = asyncio.run(chat_once(base, cookie, conversation_id))
        done = frames[-1]
        assert done["status"] == "done" and done["sources"], done
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert "Stopped." in "".join(launcher.output)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    deadline = time.monotonic() + 5
    while embedded_redis._answers(tmp_path / "redis" / "redis.sock"):
        assert time.monotonic() < deadline, "the embedded Redis outlived the launcher"
        time.sleep(0.1)


def test_ctrl_c_leaves_alone_an_embedded_redis_the_launcher_did_not_start(tmp_path, monkeypatch):
    # The test suite's own embedded Redis is still the one to stop at the end of the session.
    monkeypatch.setattr(embedded_redis, "started_here", embedded_redis.started_here)
    # Started earlier by another process (a `manage.py shell`, say) that still uses it.
    url = embedded_redis.ensure_running(tmp_path / "redis")
    try:
        launcher = start_launcher(launcher_env(tmp_path, free_port()))
        process = launcher.process
        launcher.wait_for_output("Support Bot is running", timeout=90)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert "Stopped." in "".join(launcher.output)
        assert embedded_redis._answers(tmp_path / "redis" / "redis.sock"), url
    finally:
        embedded_redis.stop(tmp_path / "redis")


def production_env(var_dir: Path, port: int, static_root: Path) -> dict[str, str]:
    """Production settings (DEBUG=0: hashed static files from STATIC_ROOT's manifest) on
    plain HTTP, as someone tries them from a checkout."""
    env = launcher_env(var_dir, port)
    env.update(
        DEBUG="0",
        SECRET_KEY="launcher-test-secret-key-that-is-long-enough-0123456789",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        STATIC_FROM_FINDERS="0",
        STATIC_ROOT=str(static_root),
    )
    return env


def test_make_run_with_production_settings_collects_the_static_files_and_serves_pages(
    tmp_path,
):
    port = free_port()
    launcher = start_launcher(production_env(tmp_path, port, tmp_path / "static"))
    process = launcher.process
    try:
        launcher.wait_for_output("Support Bot is running", timeout=180)
        base = f"http://127.0.0.1:{port}"
        page = urllib.request.urlopen(f"{base}/chat/", timeout=10)
        assert page.status == 200
        html = page.read().decode()
        script = html.split('src="/static/chat/chat.')[1].split('"')[0]
        assert re.fullmatch(r"[0-9a-f]{12}\.js", script), script  # hashed: chat.<hash>.js
        served = urllib.request.urlopen(f"{base}/static/chat/chat.{script}", timeout=10)
        assert served.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert (tmp_path / "static" / "staticfiles.json").exists()


def test_the_web_server_stops_at_once_in_production_without_collected_static_files(tmp_path):
    """Without `collectstatic` every page was a 500 ("Missing staticfiles manifest entry");
    the server now says what to run instead of starting."""
    env = production_env(tmp_path, free_port(), tmp_path / "never-collected")
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached: it stops before any request
    port = env["PORT"]
    server = subprocess.run(
        web_command("127.0.0.1", port), cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert server.returncode != 0
    assert "collectstatic --noinput" in server.stderr + server.stdout
