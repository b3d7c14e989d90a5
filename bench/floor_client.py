"""One process's share of a round's floor for bench/load.py: direct streaming calls to the fake
model server with the `openai` client, started at a wall-clock moment the parent sets.

    .venv/bin/python -m bench.floor_client < plan.json > results.json

Why a process of its own: reading a stream through the `openai` client costs the client ~60 ms
of CPU a 150-token reply (each chunk parsed into its models), about ten times what the bench's
websocket customers cost. In one process with the rest of the bench, the floor of a busy round
measured that process's queue for the CPU, not the model server (docs/performance.md, stop 33).

The plan (stdin, JSON): fake_url, start_at (time.time() when the calls begin), timeout_s and
calls: [{index, messages, tokens, due_s}], due_s null for a burst (every call at start_at,
as a barrier would) or seconds after start_at. The output (stdout, JSON): results (CallResult
fields) and cpu_s, this process's own user + system CPU seconds from start_at on.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict
from typing import Any

from bench.load import CallResult, calls_when_due, direct_client


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_calls(plan: dict[str, Any]) -> tuple[list[CallResult], float]:
    """The calls' results, and the CPU seconds this process spent from start_at on (its
    imports and start-up are not the floor's)."""
    timeout_s = float(plan["timeout_s"])
    client = direct_client(plan["fake_url"], timeout_s)
    calls = plan["calls"]
    results = [
        CallResult(call["index"], call["messages"][-1]["content"], due_s=call["due_s"])
        for call in calls
    ]
    await asyncio.sleep(max(0.0, float(plan["start_at"]) - time.time()))
    cpu_at_start = cpu_seconds()
    try:
        await calls_when_due(
            client,
            [(call["messages"], call["tokens"], r) for call, r in zip(calls, results, strict=True)],
            timeout_s,
        )
    finally:
        await client.close()
    return results, cpu_seconds() - cpu_at_start


def main() -> None:
    plan = json.load(sys.stdin)
    try:
        import uvloop

        results, cpu_s = uvloop.run(run_calls(plan))
    except ImportError:
        results, cpu_s = asyncio.run(run_calls(plan))
    json.dump({"results": [asdict(r) for r in results], "cpu_s": cpu_s}, sys.stdout)


if __name__ == "__main__":
    main()
