"""The web CPU the chat page's heartbeat costs (docs/protocol.md#heartbeat).

Starts one web process on this environment's database and Redis (run `manage.py migrate`
first), holds N widget sockets (new visitors: nothing is stored), measures the process's CPU
while they are idle, then while each sends the page's ping every PERIOD seconds, and prints
the CPU a ping. The client runs in this process: on a small machine it, not the server, limits
the rate, so the CPU a ping is the figure to read.

    DEBUG=1 .venv/bin/python bench/heartbeat.py --sockets 500 --period 0.5 --hold 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support_bot.processes import web_command  # noqa: E402

PING = '{"type":"ping"}'  # exactly as static/chat/chat.js sends it


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def customer(url: str, origin: str, state: dict, period: float, index: int) -> None:
    async with websockets.connect(url, origin=origin, compression=None) as ws:
        auth = {"type": "auth", "token": "", "conversation": "", "site": origin}
        await ws.send(json.dumps(auth))
        await ws.recv()  # session
        await ws.recv()  # conversation
        state["ready"] += 1
        await state["go"].wait()
        await asyncio.sleep(period * (index % 97) / 97)  # spread the pings over the period
        while not state["stop"].is_set():
            await ws.send(PING)
            assert json.loads(await ws.recv())["type"] == "pong"
            state["pings"] += 1
            await asyncio.sleep(period)


async def measure(port: int, pid: int, sockets: int, period: float, hold: float) -> str:
    url, origin = f"ws://127.0.0.1:{port}/ws/widget/", f"http://127.0.0.1:{port}"
    state = {"ready": 0, "pings": 0, "go": asyncio.Event(), "stop": asyncio.Event()}
    tasks = []
    for index in range(sockets):
        tasks.append(asyncio.create_task(customer(url, origin, state, period, index)))
        if index % 50 == 49:
            await asyncio.sleep(0.2)
    while state["ready"] < sockets:
        await asyncio.sleep(0.1)
    before = cpu_seconds(pid)
    await asyncio.sleep(hold)
    idle = cpu_seconds(pid) - before
    state["go"].set()
    await asyncio.sleep(period)
    state["pings"], before = 0, cpu_seconds(pid)
    await asyncio.sleep(hold)
    busy, pings = cpu_seconds(pid) - before, state["pings"]
    state["stop"].set()
    for task in tasks:
        task.cancel()
    return (
        f"{sockets} sockets for {hold:.0f} s: {idle:.2f} s of web CPU idle, {busy:.2f} s pinging "
        f"({pings / hold:.0f} pings/s): {(busy - idle) / max(pings, 1) * 1e6:.0f} µs a ping"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument(
        "--period", type=float, default=0.5, help="seconds between a socket's pings"
    )
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each phase is measured")
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen(
        web_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        for line in server.stdout:
            if "Uvicorn running" in line or time.monotonic() > deadline:
                break
        print(asyncio.run(measure(port, server.pid, args.sockets, args.period, args.hold)))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
