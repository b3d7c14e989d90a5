"""The load benchmark's machinery (bench/load.py), end to end on the embedded default: a burst,
an open-loop round and idle sockets, with one web process and one worker. No timing is asserted
here: the benchmark measures; this test checks that it runs, that every round reports its
floor, its TTFT and its CPU per reply, and that nothing was lost, doubled or failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.worker,
    pytest.mark.production_pass_only(reason="starts its own services, whatever the path"),
]


def test_a_burst_an_open_loop_round_and_idle_sockets_are_measured(tmp_path: Path) -> None:
    results = tmp_path / "load.json"
    finished = subprocess.run(
        [sys.executable, "bench/load.py", "--embedded", "--one", "2", "--n", "2",
         "--open", "12:3:2", "--idle", "5", "--no-warmup", "--web-processes", "1", "--workers", "1",
         "--worker-threads", "4", "--timeout", "30", "--max-run-s", "150",
         # BM25 alone: a fresh clone has no embedding cache, and embedding the demo knowledge
         # base would take a minute.
         "--set", "KB_EMBEDDINGS=off", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if finished.returncode != 0 or not results.exists():
        pytest.fail(f"the benchmark did not run ({finished.returncode}):\n{finished.stderr}")
    report = json.loads(results.read_text())
    rows = {row["round"]: row for row in report["rounds"]}
    # Replies as long as --reply-tokens (150), their text checked against the fake's: lost and
    # doubled below would count a difference.
    assert report["environment"]["fake_model"]["full_grounded"] is True
    assert set(rows) == {"1 at a time ×2", "N=2", "open 12@3/s×2s"}, finished.stdout
    for row in rows.values():
        assert (row["lost"], row["doubled"], row["failed"]) == (0, 0, 0), row["errors"]
        assert row["direct_ttft"][1] is not None and row["bot_ttft"][1] is not None
        assert row["ratio_p99"] is not None and row["cpu_ms_per_reply"]["ours"] is not None
        assert row["cpu_ms_per_reply"]["floor"] is not None  # the direct call's own CPU
    assert rows["open 12@3/s×2s"]["messages"] == len(report["raw"]["open12-3-2"]["ours"])
    # One customer at a time: two customers in turn, the second asking once the first's reply
    # has ended, each against a call of the floor's own.
    serial = report["raw"]["serial2"]
    assert len(serial["ours"]) == len(serial["direct"]) == 2
    (first, second) = serial["ours"]
    assert second["sent_at"] * 1000 >= first["sent_at"] * 1000 + first["total_ms"]
    one = next(t for t in report["targets"] if t["target"] == "one")
    assert one["met"] is not None, one
    idle = report["idle"]["ours"]
    assert idle["connected"] == idle["sockets"] == 5
    assert idle["kb_per_socket"] is not None
    # The floor of the burst and of the open round: in two processes of their own.
    assert "floor (direct calls in 2 processes): 2/2 ok" in finished.stdout
    assert {t["target"] for t in report["targets"]} >= {"one", "fifty", "clean"}
    assert "Targets (issue 15):" in finished.stdout


def test_a_burst_under_the_models_budget_draws_no_429_and_starts_in_the_order_asked(
    tmp_path: Path,
) -> None:
    # 6 requests a minute: the first five go at once (a minute's budget, less a second in
    # hand), the other three wait their turns, 10 s apart, while the fake model enforces the
    # same budget with real 429s.
    results = tmp_path / "budget.json"
    finished = subprocess.run(
        [sys.executable, "bench/load.py", "--embedded", "--one", "0", "--n", "8",
         "--budget-rpm", "6", "--open", "", "--idle", "0", "--no-warmup",
         "--web-processes", "1", "--workers", "1", "--worker-threads", "8",
         "--max-run-s", "150", "--set", "KB_EMBEDDINGS=off", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if finished.returncode != 0 or not results.exists():
        pytest.fail(f"the benchmark did not run ({finished.returncode}):\n{finished.stderr}")
    (row,) = json.loads(results.read_text())["rounds"]
    assert (row["lost"], row["doubled"], row["failed"]) == (0, 0, 0), row["errors"]
    assert (row["model_requests"], row["model_429s"]) == (8, 0), finished.stdout
    assert row["out_of_order"] == 0, finished.stdout
