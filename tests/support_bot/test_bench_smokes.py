"""Small benchmarks run end to end on a little work, against the tests' Redis: each measures,
so no timing is asserted here; these check that they run and that what they time happened."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT


def test_the_frame_benchmark_stores_every_frame_it_publishes_with_both_parsers() -> None:
    finished = subprocess.run(
        [sys.executable, "bench/frame_publish.py", "--redis", settings.REDIS_URL,
         "--frames", "20", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "python" in finished.stdout and "hiredis ÷ python" in finished.stdout


@pytest.mark.production_pass_only(reason="its own in-memory database and the model's file alike")
def test_the_embedding_floor_holds_the_encoders_speed_against_this_cpus_matrix_throughput() -> None:
    finished = subprocess.run(
        [sys.executable, "bench/question_embedding.py", "--floor", "--questions", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout + finished.stderr
    achieved, peak = re.search(
        r"done at ([\d.]+) GFLOP/s.*?the same kernels: ([\d.]+) GFLOP/s", finished.stdout, re.S
    ).groups()
    assert float(achieved) > 0 and float(peak) > 0
    assert re.search(r"floor: [\d.]+ ms of one core a question", finished.stdout)


@pytest.mark.production_pass_only(reason="its own SQLite database and fake model on either path")
def test_the_reply_timeline_times_each_stage_of_a_reply_that_was_written() -> None:
    finished = subprocess.run(
        [sys.executable, "bench/reply_timeline.py", "--redis", settings.REDIS_URL,
         "--replies", "1", "--ttft-ms", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout + finished.stderr
    stages = re.findall(r"^  (.+?)\s+at\s+[\d.]+\s+took", finished.stdout, re.MULTILINE)
    assert stages == [
        "claim",
        "question's embedding",
        "request (history, retrieval, prompt)",
        "reply.start sent",
        "first token sent",
    ]
