"""The fault suite's machinery (bench/faults.py), end to end on one scenario: its own Postgres
cluster, Redis and RabbitMQ vhost, two web processes and two workers under its supervisor, three
customers, and one worker killed with SIGKILL mid-reply. No timing is asserted here: the suite
measures; this test checks that it runs and that nothing was lost, doubled or left hanging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.faults import missing_binaries
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.worker,
    pytest.mark.production_pass_only(reason="starts its own services, whatever the path"),
]

MISSING = missing_binaries("amqp")


@pytest.mark.skipif(bool(MISSING), reason=f"the fault suite needs {', '.join(MISSING)}")
def test_a_worker_killed_mid_reply_loses_doubles_and_hangs_nothing(tmp_path: Path) -> None:
    results = tmp_path / "faults.json"
    finished = subprocess.run(
        [sys.executable, "bench/faults.py", "--quick", "--customers", "3", "--broker", "amqp",
         "--scenarios", "worker-kill", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    # Exit 1 is a failed gate, measured; anything else means the suite itself did not run.
    if finished.returncode not in (0, 1) or not results.exists():
        pytest.fail(f"the fault suite did not run ({finished.returncode}):\n{finished.stderr}")
    (row,) = json.loads(results.read_text())["scenarios"]
    if row["messages"] != 3 or not row["restarts"]["worker0"]:
        pytest.fail(f"the worker was not killed and restarted mid-reply: {row['events']}")

    assert (row["lost"], row["doubled"], row["hung"]) == (0, 0, 0), row["notes"] + row["errors"]
