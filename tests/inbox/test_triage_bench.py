"""The inbox benchmark (bench/inbox.py) runs end to end on tiny data: it seeds its own fresh
Postgres database, times every scenario through the real view and prints the table. No
timing is asserted here; the 100k run's table is in docs/performance.md."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.default_pass_only(
    reason="creates its own Postgres database, whatever the path"
)

SCENARIOS = (
    "first page (All, default order)",
    "second page (cursor)",
    "Unassigned + label",
    "search: common word",
    "search: rare word",
    "search: customer email",
)


def test_the_inbox_bench_seeds_its_database_and_prints_the_table() -> None:
    database = f"sb_inbox_bench_smoke_{os.getpid()}"
    finished = subprocess.run(
        [sys.executable, "bench/inbox.py", "--conversations", "200", "--turns", "4000",
         "--requests", "2", "--database", database],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    out = finished.stdout
    assert "Seeded 200 conversations and 4,000 turns" in out
    lines = {line.split("  ")[0].strip(): line for line in out.splitlines() if "  " in line}
    for scenario in SCENARIOS:
        row = lines[scenario].split()
        assert float(row[-4]) > 0 and float(row[-3]) > 0, lines[scenario]  # p50, p95 in ms
    assert int(lines["first page (All, default order)"].split()[-2]) == 50
    assert int(lines["search: rare word"].split()[-2]) >= 1
