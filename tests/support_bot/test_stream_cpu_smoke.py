"""The stream-reading benchmark (bench/stream_cpu.py), end to end on a few short replies: its
three ways of reading run against a fake model server of their own and every reply's text
comes whole. No timing is asserted here: the benchmark measures; this checks that it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_stream_reading_benchmark_reads_every_reply_whole_three_ways(tmp_path: Path) -> None:
    results = tmp_path / "stream_cpu.json"
    finished = subprocess.run(
        [sys.executable, "bench/stream_cpu.py", "--threads", "2", "--replies", "1",
         "--rounds", "1", "--reply-tokens", "20", "--tokens-per-s", "200", "--ttft-ms", "0",
         "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout + finished.stderr
    outcome = json.loads(results.read_text())
    assert outcome["wrong"] == 0
    assert [r["variant"] for r in outcome["rounds"]] == [
        "httpx2, token at a time",
        "urllib3, token at a time",
        "urllib3, piece at a time",
    ]
    assert all(r["replies"] == 2 and r["tokens"] == 40 for r in outcome["rounds"])
    # CPU a reply for each way (too little to tell apart on 2 replies).
    assert all(row["cpu_ms_per_reply"] > 0 for row in outcome["summary"].values())
