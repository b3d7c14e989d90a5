"""How many streamed chunks a second the fake LLM server sustains, and how punctual they are.

    .venv/bin/python bench/fake_llm_throughput.py --streams 200 --tokens-per-s 50

Starts `python -m tests.fake_llm` as a subprocess, opens N concurrent streaming chat
requests and reports what the client saw. The client must stay cheaper than the server or it is
what gets measured (on 2 cores, httpx2 parsing 10,000 chunks/s saturates a core by itself), so
`--client raw` (the default) speaks HTTP/1.1 over asyncio sockets and only counts chunks;
`--client httpx2` uses a plain httpx2.AsyncClient, as an application would (no openai SDK).

Reports:
  - chunks/s: content chunks received per second while all streams were running, vs the target;
  - first byte p50/p99: request sent -> headers and role chunk (how long requests queue);
  - TTFT p50/p99: request sent -> first content chunk (server ttft + queueing);
  - gap p50/p99: time between consecutive content chunks of one stream (target 1/rate);
  - drift p50/p99/max: how late each chunk arrives against its schedule (first chunk + i/rate);
  - server CPU: the server process's CPU time over the run, as % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
CONTENT = b'"delta":{"content":'  # only content chunks have this; the role chunk starts with "role"


@dataclass
class StreamResult:
    sent: float
    first_byte: float = 0.0  # the response's headers and role chunk
    arrivals: list[float] = field(default_factory=list)
    done: bool = False


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_llm",
            "--port",
            "0",
            "--ttft-ms",
            str(args.ttft_ms),
            "--tokens-per-s",
            str(args.tokens_per_s),
            "--reply-tokens",
            str(args.reply_tokens),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"fake_llm did not start: {line!r}")
    return process, line.rsplit(" ", 1)[1].strip()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_stream(client: httpx2.AsyncClient, index: int) -> StreamResult:
    body = {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": f"benchmark question {index}"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = StreamResult(sent=time.perf_counter())
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        result.first_byte = time.perf_counter()
        async for piece in response.aiter_raw():
            now = time.perf_counter()
            # A read can hold several chunks (rarely, when the client falls behind): all of them
            # arrived now.
            result.arrivals.extend([now] * piece.count(CONTENT))
            if piece.endswith(b"data: [DONE]\n\n"):
                result.done = True
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class RawStream(asyncio.Protocol):
    """One streaming request over a bare socket: write the request, count chunks as they land."""

    def __init__(
        self, request: bytes, result: StreamResult, finished: asyncio.Future[None]
    ) -> None:
        self.request, self.result, self.finished = request, result, finished
        self.carry = b""  # a pattern can straddle two reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.result.sent = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.result.first_byte = self.result.first_byte or now
        window = self.carry + data
        self.result.arrivals.extend([now] * window.count(CONTENT))
        self.carry = window[-(len(CONTENT) - 1) :]
        if b"data: [DONE]\n\n" in window and window.endswith(b"0\r\n\r\n"):
            self.result.done = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def one_raw_stream(host: str, port: int, index: int) -> StreamResult:
    body = json.dumps(
        {
            "model": "fake-llm",
            "messages": [{"role": "user", "content": f"benchmark question {index}"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%d\r\nauthorization: Bearer bench\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    ) % (host.encode(), port, len(body), body)
    loop = asyncio.get_running_loop()
    result = StreamResult(sent=time.perf_counter())
    finished: asyncio.Future[None] = loop.create_future()
    await loop.create_connection(lambda: RawStream(request, result, finished), host, port)
    await finished
    return result


async def run(args: argparse.Namespace, base_url: str) -> list[StreamResult]:
    if args.client == "raw":
        url = httpx2.URL(base_url)
        host, port = url.host, url.port or 80
        return await asyncio.gather(*(one_raw_stream(host, port, i) for i in range(args.streams)))
    limits = httpx2.Limits(
        max_connections=args.streams + 10, max_keepalive_connections=args.streams
    )
    timeout = httpx2.Timeout(60, connect=30)
    headers = {"authorization": "Bearer bench"}
    async with httpx2.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, headers=headers
    ) as client:
        return await asyncio.gather(*(one_stream(client, i) for i in range(args.streams)))


def report(args: argparse.Namespace, results: list[StreamResult], cpu: float, wall: float) -> None:
    interval = 1 / args.tokens_per_s
    complete = sum(r.done and len(r.arrivals) == args.reply_tokens for r in results)
    ttft = [(r.arrivals[0] - r.sent) * 1000 for r in results if r.arrivals]
    first_byte = [(r.first_byte - r.sent) * 1000 for r in results if r.first_byte]
    gaps = [
        (b - a) * 1000 for r in results for a, b in zip(r.arrivals, r.arrivals[1:], strict=False)
    ]
    drift = [
        (t - r.arrivals[0] - i * interval) * 1000 for r in results for i, t in enumerate(r.arrivals)
    ]
    # Steady state: from the last stream's first chunk to the first stream's last chunk, when
    # every stream is producing.
    start = max(r.arrivals[0] for r in results if r.arrivals)
    end = min(r.arrivals[-1] for r in results if r.arrivals)
    steady = sum(1 for r in results for t in r.arrivals if start <= t <= end)
    total = sum(len(r.arrivals) for r in results)
    target = args.streams * args.tokens_per_s

    def row(name: str, values: list[float], target: str) -> None:
        print(f"{name:<19}p50 {pct(values, 0.5):7.2f}  p99 {pct(values, 0.99):7.2f}  {target}")

    print(f"client             {args.client}")
    print(
        f"streams            {args.streams} x {args.reply_tokens} tokens at {args.tokens_per_s:g}/s"
    )
    print(f"complete streams   {complete}/{args.streams}")
    if end > start:
        print(f"chunks/s (steady)  {steady / (end - start):,.0f}  (target {target:,.0f})")
    print(f"chunks/s (overall) {total / wall:,.0f}  ({total:,} chunks in {wall:.2f} s)")
    row("first byte ms", first_byte, "(headers + role chunk: queueing in the server)")
    row("TTFT ms", ttft, f"(server ttft {args.ttft_ms:g})")
    row("gap ms", gaps, f"(target {interval * 1000:.2f}, mean {statistics.fmean(gaps or [0]):.3f})")
    row("drift ms", drift, f"(max {max(drift, default=0):.2f})")
    print(f"server CPU         {cpu:.2f} s = {100 * cpu / wall:.0f}% of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens-per-s", type=float, default=50)
    parser.add_argument("--reply-tokens", type=int, default=150)
    parser.add_argument("--ttft-ms", type=float, default=300)
    parser.add_argument("--client", choices=("raw", "httpx2"), default="raw")
    args = parser.parse_args()
    server, base_url = start_server(args)
    try:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
        cpu_before = cpu_seconds(server.pid)
        began = time.perf_counter()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results = runner.run(run(args, base_url))
        wall = time.perf_counter() - began
        report(args, results, cpu_seconds(server.pid) - cpu_before, wall)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
