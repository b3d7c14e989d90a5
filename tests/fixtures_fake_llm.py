"""Fixtures for the fake OpenAI-compatible server (tests/fake_llm.py).

`fake_llm_server` starts one server process for the whole session; `fake_llm` resets it before
each test and is what tests use:

    def test_it_streams(fake_llm):
        fake_llm.set_fault("429", retry_after=2)
        fake_llm.script(["Hello", " there"])  # the next request's reply, chunk by chunk
        client = openai.OpenAI(base_url=fake_llm.base_url, api_key="x")
        ...
        assert fake_llm.requests()[0]["retry_count"] == 0

Timings are small so tests stay fast: first token after 20 ms, then 400 tokens a second, and
replies of 20 tokens (FAKE_LLM_REPLY_TOKENS).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fixtures_kb import parcels_article

ROOT = Path(__file__).resolve().parent.parent
FAKE_LLM_TTFT_MS = 20
FAKE_LLM_TOKENS_PER_S = 400
FAKE_LLM_REPLY_TOKENS = 20


@dataclass
class FakeLLMServer:
    """The server process. `url` is its root; `base_url` is what the openai client wants."""

    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def reply_tokens(self) -> int:
        return FAKE_LLM_REPLY_TOKENS

    def set_fault(self, fault: str, **options: Any) -> dict[str, Any]:
        """Arm a fault for the next `times` chat requests (default 1; -1 for all of them).

        Options: times, retry_after, retry_after_ms, error_code, cut_after, clean_eof, hang_s.
        """
        response = httpx2.post(f"{self.url}/_control/faults", json={"fault": fault, **options})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def script(self, *replies: list[str]) -> None:
        """The next chat requests, one each, get these replies: lists of tokens, each token one
        SSE chunk (["[[NO_", "ANSWER]]"] sends a marker in two pieces)."""
        response = httpx2.post(f"{self.url}/_control/replies", json={"replies": list(replies)})
        response.raise_for_status()

    def set_budget(self, requests_per_min: int = 0, tokens_per_min: int = 0) -> dict[str, Any]:
        """Enforce an account's rate limits with real 429s, starting full (0: no limit)."""
        response = httpx2.post(
            f"{self.url}/_control/budget",
            json={"requests_per_min": requests_per_min, "tokens_per_min": tokens_per_min},
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The chat requests received since the last reset: body, headers, retry_count, ..."""
        response = httpx2.get(f"{self.url}/_control/requests")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def reset(self) -> None:
        httpx2.post(f"{self.url}/_control/reset").raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_fake_llm(timeout: float = 30, extra_args: Sequence[str] = ()) -> FakeLLMServer:
    """A fake server of its own (the caller stops it); `extra_args` go on its command line."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_llm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",  # the server picks a free port and prints it: no race with other processes
            "--ttft-ms",
            str(FAKE_LLM_TTFT_MS),
            "--tokens-per-s",
            str(FAKE_LLM_TOKENS_PER_S),
            "--reply-tokens",
            str(FAKE_LLM_REPLY_TOKENS),
            *extra_args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("fake_llm listening on "):
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not listening.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("fake_llm did not start:\n" + "".join(output))
    url = next(line for line in output if line.startswith("fake_llm listening on "))
    return FakeLLMServer(process, url.rsplit(" ", 1)[1].strip(), output)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    server = start_fake_llm()
    yield server
    server.stop()


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    """The session's fake server, with no fault armed and no requests recorded."""
    fake_llm_server.reset()
    return fake_llm_server


def answer_with_fake_model(settings: Any, fake_llm: FakeLLMServer) -> FakeLLMServer:
    """Point the bot at the fake OpenAI-compatible server through the real openai client."""
    settings.LLM_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = fake_llm.base_url
    settings.OPENAI_MODEL = "fake-model"
    settings.OPENAI_READ_TIMEOUT_S = 2
    return fake_llm


@pytest.fixture
def model(settings: Any, fake_llm: FakeLLMServer) -> FakeLLMServer:
    """The bot on the fake server, with the help article the reply tests answer from, so every
    reply is grounded and reaches the model: any request to it shows in requests(). Modules
    with articles of their own define their own `model`."""
    answer_with_fake_model(settings, fake_llm)
    parcels_article()
    return fake_llm
