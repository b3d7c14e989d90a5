"""The frame benchmark (bench/frame_publish.py) on a few frames against the tests' Redis: both
parsers publish, and every frame lands in the replay log. No timing is asserted here."""

from __future__ import annotations

import subprocess
import sys

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
