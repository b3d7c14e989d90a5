"""How soon does the first question after `make run` get its first words?

Runs `make run`'s launcher (python -m support_bot.launcher) on a fresh var folder, waits for it
to print its address, then at once opens the chat page (again every 0.1 s until the server
answers, as a customer would reload), asks a question over the websocket and times the first
reply.delta and the reply.done. The offline answerer answers (no key, no
network), as on a fresh machine.

    .venv/bin/python bench/first_answer.py [--root PATH] [--cold] [--runs 3]

--root runs another checkout's launcher (e.g. a worktree of the commit before a change), so
both are measured in one session. --cold gives the run an empty embedding cache, as on a fresh
clone (the demo's passages and example questions are embedded for real); without it the
checkout's var/cache/embeddings is used, as on a second `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How do I reset my password?"
ADDRESS_LINE = "Support Bot is running"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher_env(var_dir: Path, port: int, cold: bool) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DATABASE_NAME", "LLM_PROVIDER"}
    }
    env.update(SUPPORT_BOT_VAR_DIR=str(var_dir), PORT=str(port), PYTHONUNBUFFERED="1")
    if cold:
        env["KB_EMBEDDING_CACHE_DIR"] = str(var_dir / "embedding-cache")
    return env


def open_page(base: str) -> http.client.HTTPResponse:
    """The chat page, as soon as the server answers (a customer reloads until it does)."""
    deadline = time.monotonic() + 300
    while True:
        try:
            return urllib.request.urlopen(f"{base}/chat/", timeout=30)  # noqa: S310 (our server)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def ask(base: str) -> tuple[float, float]:
    """Seconds from now to the first words and to the end of the reply."""
    started = time.monotonic()
    page = open_page(base)
    cookie = page.headers["Set-Cookie"].split(";")[0]
    conversation = page.read().decode().split("/ws/chat/")[1].split("/")[0]
    url = base.replace("http://", "ws://") + f"/ws/chat/{conversation}/"
    first_words = None
    async with websockets.connect(url, origin=base, additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(await ws.recv())["type"] == "conversation"
        await ws.send(json.dumps({"type": "message", "client_id": "first-1", "text": QUESTION}))
        async with asyncio.timeout(300):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "reply.delta" and first_words is None:
                    first_words = time.monotonic() - started
                if frame["type"] == "reply.done":
                    if frame["status"] != "done":
                        raise RuntimeError(f"the reply failed: {frame}")
                    done = time.monotonic() - started
                    return first_words if first_words is not None else done, done


def run_once(root: Path, cold: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="first-answer-") as tmp:
        port = free_port()
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "support_bot.launcher"],
            cwd=root,
            env=launcher_env(Path(tmp), port, cold),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        announced = threading.Event()
        output: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                output.append(line)
                if ADDRESS_LINE in line:
                    announced.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            if not announced.wait(timeout=600):
                raise RuntimeError("no address within 600 s:\n" + "".join(output)[-3000:])
            address_s = time.monotonic() - started
            first_words_s, done_s = asyncio.run(ask(f"http://127.0.0.1:{port}"))
        finally:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        return {"address_s": address_s, "first_words_s": first_words_s, "done_s": done_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--cold", action="store_true", help="an empty embedding cache")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [run_once(args.root.resolve(), args.cold) for _ in range(args.runs)]
    print(f"checkout: {args.root.resolve()}  ({'cold' if args.cold else 'warm'} embedding cache)")
    for name, label in (
        ("address_s", "launch to address printed"),
        ("first_words_s", "address to first words"),
        ("done_s", "address to reply done"),
    ):
        values = [run[name] for run in runs]
        print(
            f"  {label:<28} median {statistics.median(values):6.2f} s"
            f"  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
