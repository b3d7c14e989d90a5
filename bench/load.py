"""Load benchmark: time to first token through Support Bot, against the model server itself.

    .venv/bin/python bench/load.py                 # production path: Postgres + Redis
    .venv/bin/python bench/load.py --embedded      # default path: SQLite + embedded Redis

Starts everything on loopback (fake OpenAI-compatible server, database, ASGI server, Celery
workers), then for each N measures N concurrent streaming calls straight to the fake server
(the baseline) and N concurrent customers over the websocket, and reports the overhead Support
Bot adds to the time to first token. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable

from support_bot.processes import web_command, worker_command  # noqa: E402

BENCH_DIR = ROOT / ".bench"
BENCH_DB = "support_bot_bench"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
PROD_REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET = "Target: overhead ≤ 25 ms p50 and ≤ 100 ms p99 at N = 200"
# Under --budget-rpm a reply may wait its turn up to REPLY_DEADLINE_S (120 s by default).
BUDGET_TIMEOUT_S = 130.0
# A reply that starts this much later than one to a message stored after it is out of order.
OVERTAKE_TOLERANCE_S = 1.0
# Variables of the parent shell that would change which path the app takes: never inherited.
APP_VARIABLES = (
    "DATABASE_URL", "DATABASE_NAME", "DATABASE_CONN_MAX_AGE", "REDIS_URL", "CELERY_BROKER_URL",
    "REDIS_KEY_PREFIX", "SUPPORT_BOT_VAR_DIR", "LLM_PROVIDER", "OPENAI_API_KEY",
    "OPENAI_BASE_URL", "OPENAI_MODEL", "DJANGO_SETTINGS_MODULE",
)  # fmt: skip


class BenchError(Exception):
    """A stage could not run (a process did not start, the database is unreachable...)."""


# --- Options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    n_values: list[int]
    ttft_ms: int
    tokens_per_s: float
    reply_tokens: int
    web_processes: int
    workers: int
    worker_threads: int
    embedded: bool
    timeout_s: float
    warmup: bool
    max_run_s: float
    extra_env: dict[str, str]
    profile: bool
    worker_nice: int
    # The model account's budget (requests, tokens a minute; 0: none): the fake server enforces
    # it with 429s during the Support Bot rounds, and the app is given the same numbers.
    budget_rpm: int = 0
    budget_tpm: int = 0


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,50,200", help="concurrent customers per round")
    parser.add_argument("--ttft-ms", type=int, default=300, help="fake model: time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=50, help="fake model: token rate")
    parser.add_argument("--reply-tokens", type=int, default=150, help="fake model: reply length")
    parser.add_argument("--web-processes", type=int, default=2, help="uvicorn --workers")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--worker-threads", type=int, default=110, help="threads per worker")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="the default path (SQLite + embedded Redis) instead of Postgres + Redis",
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds per reply")
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one unreported round first, so every process has its connections open",
    )
    parser.add_argument("--max-run-s", type=float, default=1200, help="bound on the whole run")
    add_set_option(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of web and worker processes in the largest round",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="start the Celery workers under `nice -n N` (an experiment: web gets the CPU first)",
    )
    parser.add_argument(
        "--budget-rpm",
        type=int,
        default=0,
        help="the fake model enforces this many requests a minute with 429s during the Support "
        "Bot rounds, and the app gets OPENAI_REQUESTS_PER_MIN set to the same (0: off)",
    )
    parser.add_argument(
        "--budget-tpm", type=int, default=0, help="the same for tokens a minute (0: off)"
    )
    args = parser.parse_args(argv)
    if args.budget_rpm < 0 or args.budget_tpm < 0:
        parser.error("--budget-rpm and --budget-tpm are counts a minute: 0 (off) or more")
    extra = set_option_values(parser, args.set)
    timeout = args.timeout
    if (args.budget_rpm or args.budget_tpm) and timeout < BUDGET_TIMEOUT_S:
        # Under a budget the last of a burst waits its turn, up to the reply's deadline.
        timeout = BUDGET_TIMEOUT_S
    return Options(
        n_values=[int(n) for n in args.n.split(",") if n.strip()],
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        reply_tokens=args.reply_tokens,
        web_processes=args.web_processes,
        workers=args.workers,
        worker_threads=args.worker_threads,
        embedded=args.embedded,
        timeout_s=timeout,
        warmup=args.warmup,
        max_run_s=args.max_run_s,
        extra_env=extra,
        profile=args.profile,
        worker_nice=args.worker_nice,
        budget_rpm=args.budget_rpm,
        budget_tpm=args.budget_tpm,
    )


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """--set NAME=VALUE (repeatable): extra environment for the app processes."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the app processes, e.g. --set DATABASE_CONN_MAX_AGE=60",
    )


def set_option_values(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set needs NAME=VALUE, got {item!r}")
        extra[name] = value
    return extra


# --- Child processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    """A process this benchmark started, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> str:
        """Wait until the log shows `needle` `count` times; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if text.count(needle) >= count:
                return text
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.tail()}"
                )
            time.sleep(0.05)
        raise BenchError(f"{self.name}: {needle!r} not seen within {timeout}s:\n{self.tail()}")

    def pids(self) -> list[int]:
        """The process and its children (uvicorn's web processes)."""
        import psutil

        try:
            parent = psutil.Process(self.process.pid)
            return [parent.pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace_s: float = 10) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def spawn(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, *, append: bool = False
) -> Child:
    """Start a child; `append` keeps the log of an earlier run under the same name (a restart)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab" if append else "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() reaches uvicorn's children too
        )
    return Child(name, process, log_path)


# --- Stage 1: start everything ----------------------------------------------------------------


@dataclass
class Stack:
    """Everything the benchmark started, and where to reach it."""

    env: dict[str, str]
    path: str
    fake_url: str
    web_url: str
    log_dir: Path
    fake: Child | None = None
    web: Child | None = None
    workers: list[Child] = field(default_factory=list)
    worker_names: list[str] = field(default_factory=list)
    redis_url: str = ""
    redis_pid: int | None = None  # only read (CPU time), never signalled

    def children(self) -> list[Child]:
        return [c for c in [self.fake, self.web, *self.workers] if c is not None]


def start_fake_llm(opts: Options, log_dir: Path, env: dict[str, str]) -> tuple[Child, str]:
    port = free_port()
    child = spawn(
        "fake_llm",
        [
            PYTHON, "-m", "tests.fake_llm", "--host", "127.0.0.1", "--port", str(port),
            "--ttft-ms", str(opts.ttft_ms), "--tokens-per-s", str(opts.tokens_per_s),
            "--reply-tokens", str(opts.reply_tokens),
        ],
        env,
        log_dir,
    )  # fmt: skip
    text = child.wait_for("fake_llm listening on", timeout=30)
    match = re.search(r"fake_llm listening on (http://\S+)", text)
    url = match.group(1).rstrip("/") if match else f"http://127.0.0.1:{port}"
    return child, url


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
    env.update(PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="support_bot.settings")
    return env


def app_env(
    opts: Options, fake_url: str, var_dir: Path | None, services: dict[str, str] | None = None
) -> dict[str, str]:
    """The app's environment. Production path (no var_dir): `services` names the database,
    Redis and broker (DATABASE_URL, REDIS_URL, ...), by default the shared Postgres and Redis."""
    env = base_env()
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        STATIC_FROM_FINDERS="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LLM_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=f"{fake_url}/v1",
        OPENAI_MODEL="fake-model",
        REDIS_KEY_PREFIX=f"sbbench{os.getpid()}:",
        LOG_LEVEL="WARNING",
        # Every simulated customer comes from 127.0.0.1: the per-address budgets would be theirs.
        CHAT_IP_RATE_LIMIT="off",
        CHAT_NEW_CONVERSATIONS_PER_IP="off",
    )
    if var_dir is None:
        env.update(services or {"DATABASE_URL": PG_URL, "REDIS_URL": PROD_REDIS_URL})
    else:
        env.update(SUPPORT_BOT_VAR_DIR=str(var_dir))
    if opts.budget_rpm or opts.budget_tpm:
        env.update(
            OPENAI_REQUESTS_PER_MIN=str(opts.budget_rpm), OPENAI_TOKENS_PER_MIN=str(opts.budget_tpm)
        )
    env.update(opts.extra_env)
    return env


def recreate_postgres_database() -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    except psycopg.Error as exc:
        raise BenchError(f"cannot recreate Postgres database {BENCH_DB}: {exc}") from exc


def migrate(env: dict[str, str], log_dir: Path) -> None:
    """Migrate and load the demo knowledge base: the questions are answered from it."""
    with open(log_dir / "migrate.log", "wb") as log:
        for command in (["migrate", "--noinput", "-v", "0"], ["load_demo_kb"]):
            result = subprocess.run(
                [PYTHON, "manage.py", *command],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
            if result.returncode:
                tail = (log_dir / "migrate.log").read_text()[-3000:]
                raise BenchError(f"{command[0]} failed:\n{tail}")


def grounded_messages(system_prompt: str, text: str) -> list[dict[str, str]]:
    """The messages Support Bot sends the model for this first message of a conversation."""
    import dataclasses

    from bot.config import default_config
    from bot.prompt import build_request
    from bot.types import ChatMessage

    config = dataclasses.replace(default_config(), system_prompt=system_prompt)
    request = build_request(config, [ChatMessage("user", text)])
    if request.knowledge is None or not request.knowledge.passages:
        raise BenchError(f"the knowledge base has no answer for the bench question {text!r}")
    return [{"role": m.role, "content": m.content} for m in request.messages]


def start_web(opts: Options, env: dict[str, str], log_dir: Path) -> tuple[Child, str]:
    port = free_port()
    child = spawn(
        "web",
        [*web_command("127.0.0.1", port, processes=opts.web_processes),
         "--loop", "uvloop", "--http", "httptools"],
        {**env, "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"},
        log_dir,
    )  # fmt: skip
    return child, f"http://127.0.0.1:{port}"


def start_workers(
    opts: Options, env: dict[str, str], log_dir: Path
) -> tuple[list[Child], list[str]]:
    children, names = [], []
    host = socket.gethostname()
    for i in range(opts.workers):
        name = f"bench{os.getpid()}w{i}"
        children.append(
            spawn(
                f"worker{i}",
                [
                    *(["nice", "-n", str(opts.worker_nice)] if opts.worker_nice else []),
                    *worker_command(opts.worker_threads, name=f"{name}@%h", loglevel="WARNING"),
                ],
                env,
                log_dir,
            )
        )  # fmt: skip
        names.append(f"{name}@{host}")
    return children, names


def wait_for_web(stack: Stack, opts: Options, timeout: float = 60) -> None:
    assert stack.web is not None
    # One "Application startup complete" per web process (lifespan is answered by uvicorn).
    stack.web.wait_for("Application startup complete", count=opts.web_processes, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = f"{stack.web_url}/healthz"  # always http://127.0.0.1:<port>
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"/healthz does not answer: {exc}\n{stack.web.tail()}") from exc
        time.sleep(0.2)


def wait_for_workers(stack: Stack, timeout: float = 60) -> None:
    """Celery logs nothing at WARNING when ready: ask each worker for a pong instead."""
    from support_bot.celery import app

    deadline = time.monotonic() + timeout
    missing = set(stack.worker_names)
    while missing:
        for worker in stack.workers:
            if worker.process.poll() is not None:
                raise BenchError(f"{worker.name} exited:\n{worker.tail()}")
        for reply in app.control.ping(destination=sorted(missing), timeout=1.0) or []:
            missing -= set(reply)
        if missing and time.monotonic() > deadline:
            raise BenchError(f"workers {sorted(missing)} did not answer a ping in {timeout}s")


def setup_django(env: dict[str, str]) -> None:
    """Run Django in this process with exactly the app's environment."""
    for name in APP_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(env)
    for entry in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:  # e.g. --set PYTHONPATH=... for a settings module
            sys.path.insert(0, entry)
    import django

    django.setup()


def start_stack(opts: Options, cleanup: contextlib.ExitStack, log_dir: Path) -> Stack:
    fake, fake_url = start_fake_llm(opts, log_dir, base_env())
    cleanup.callback(fake.stop)
    var_dir: Path | None = None
    if opts.embedded:
        var_dir = Path(tempfile.mkdtemp(prefix="sbbench-"))
        cleanup.callback(_remove_tree, var_dir)
        from support_bot import embedded_redis

        redis_url = embedded_redis.ensure_running(var_dir / "redis")
        cleanup.callback(embedded_redis.stop, var_dir / "redis")
        redis_pid = int((var_dir / "redis" / "redis.pid").read_text().strip())
        path = "embedded default: SQLite (WAL) + embedded Redis (unix socket)"
    else:
        recreate_postgres_database()
        redis_url, redis_pid = PROD_REDIS_URL, _redis_server_pid(PROD_REDIS_URL)
        path = "production: PostgreSQL + Redis over TCP (loopback)"
    env = app_env(opts, fake_url, var_dir)
    if not opts.embedded:
        cleanup.callback(_delete_redis_keys, env["REDIS_KEY_PREFIX"])
    migrate(env, log_dir)
    stack = Stack(env=env, path=path, fake_url=fake_url, web_url="", log_dir=log_dir, fake=fake)
    stack.redis_url, stack.redis_pid = redis_url, redis_pid
    stack.web, stack.web_url = start_web(opts, env, log_dir)
    cleanup.callback(stack.web.stop)
    stack.workers, stack.worker_names = start_workers(opts, env, log_dir)
    for worker in stack.workers:
        cleanup.callback(worker.stop)
    setup_django(env)
    wait_for_web(stack, opts)
    wait_for_workers(stack)
    return stack


def _redis_server_pid(url: str) -> int | None:
    import redis

    with contextlib.suppress(Exception):
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    return None


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(PROD_REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


# --- Stage 2: customers and conversations ----------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """One customer with an open conversation, and the cookie that logs it in."""

    customer_id: str
    conversation_id: str
    cookie: str


def create_seats(count: int) -> list[Seat]:
    from django.db import connections, transaction

    from conversations.models import Conversation, Customer
    from conversations.visitors import signed_visitor_cookie

    with transaction.atomic():
        customers = Customer.objects.bulk_create(
            [Customer(display_name=f"Bench customer {i}") for i in range(count)]
        )
        conversations = Conversation.objects.bulk_create(
            [Conversation(customer=customer) for customer in customers]
        )
    seats = [
        Seat(str(c.customer_id), str(c.pk), signed_visitor_cookie(c.customer_id))
        for c in conversations
    ]
    connections.close_all()  # hold no connection during the rounds
    return seats


def question(round_name: str, i: int) -> str:
    return f"[{round_name}:{i}] Hello! How do I change the delivery address of order {1000 + i}?"


# --- Stage 3: the rounds ----------------------------------------------------------------------


@dataclass
class CallResult:
    """One streamed reply, as the client saw it. Times in ms from just before the request."""

    index: int
    text_sent: str
    ok: bool = False
    error: str = ""
    ttft_ms: float | None = None
    total_ms: float | None = None
    frames: int = 0  # reply.delta frames (Support Bot) or content chunks (direct)
    restarts: int = 0  # reply.start frames after the first
    resumes: int = 0  # resume frames sent, as the browser does on a stall or a gap
    dup_frames: int = 0  # frames whose seq was seen before
    waiting_lines: int = 0  # reply.waiting frames: "one moment" while it waited its turn
    missing_seqs: int = 0  # gaps in seq before reply.done
    lost_tokens: int = 0  # expected tokens not (fully) in the streamed text
    lost_chars: int = 0
    extra_chars: int = 0
    matches_done: bool | None = None  # deltas == reply.done text
    matches_expected: bool = False  # streamed text == expected_reply(...)
    done_status: str | None = None  # the reply.done frame's status
    # Support Bot only: where the time went (see add_server_timings).
    reply_id: int | None = None
    ack_ms: float | None = None
    start_frame_ms: float | None = None
    sent_at: float | None = None  # wall clock (time.time()), comparable with DB timestamps
    first_delta_at: float | None = None
    stored_ms: float | None = None  # customer turn INSERTed (web process)
    claimed_ms: float | None = None  # reply claimed by a worker thread
    worker_first_token_ms: float | None = None  # worker saw the first token from the model


def compare_text(received: str, tokens: list[str]) -> tuple[int, int, int]:
    """(lost tokens, lost chars, extra chars) of `received` against the expected tokens."""
    expected = "".join(tokens)
    if received == expected:
        return 0, 0, 0
    matcher = difflib.SequenceMatcher(None, received, expected, autojunk=False)
    covered = bytearray(len(expected))
    matched = 0
    for _a, b, size in matcher.get_matching_blocks():
        covered[b : b + size] = b"\x01" * size
        matched += size
    lost_tokens, pos = 0, 0
    for token in tokens:
        if not all(covered[pos : pos + len(token)]):
            lost_tokens += 1
        pos += len(token)
    return lost_tokens, len(expected) - matched, len(received) - matched


def check_text(result: CallResult, received: str, tokens: list[str]) -> None:
    result.lost_tokens, result.lost_chars, result.extra_chars = compare_text(received, tokens)
    result.matches_expected = received == "".join(tokens)


async def direct_call(
    client: Any, messages: list[dict[str, str]], tokens: list[str], barrier: asyncio.Barrier,
    result: CallResult, timeout_s: float,
) -> None:  # fmt: skip
    await barrier.wait()
    t0 = time.perf_counter()
    parts: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            stream = await client.chat.completions.create(
                model="fake-model",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    content = choice.delta.content
                    if content:
                        if result.ttft_ms is None:
                            result.ttft_ms = (time.perf_counter() - t0) * 1000
                        parts.append(content)
                        result.frames += 1
        result.total_ms = (time.perf_counter() - t0) * 1000
        check_text(result, "".join(parts), tokens)
        result.ok = result.ttft_ms is not None
        if not result.ok:
            result.error = "no content"
    except TimeoutError:
        result.error = f"timeout after {timeout_s:.0f}s"
    except Exception as exc:  # noqa: BLE001 - any failure of a call is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}"[:300]


async def direct_round(
    fake_url: str, prompts: list[list[dict[str, str]]], opts: Options
) -> list[CallResult]:
    """N concurrent streaming calls straight to the fake server, each with the very prompt
    Support Bot sends for that customer (system prompt, knowledge passages, question): the
    baseline."""
    import openai

    from tests.fake_llm import expected_reply

    client = openai.AsyncOpenAI(
        base_url=f"{fake_url}/v1",
        api_key="sk-bench",
        max_retries=0,
        timeout=openai.Timeout(opts.timeout_s, connect=5),
    )
    barrier = asyncio.Barrier(len(prompts))
    results = [CallResult(i, messages[-1]["content"]) for i, messages in enumerate(prompts)]
    calls = []
    for messages, result in zip(prompts, results, strict=True):
        tokens = expected_reply(messages, opts.reply_tokens)
        calls.append(direct_call(client, messages, tokens, barrier, result, opts.timeout_s))
    try:
        await asyncio.gather(*calls)
    finally:
        await client.close()
    return results


async def connect_customer(web_url: str, seat: Seat, timeout_s: float) -> Any:
    """Open a customer's socket and read the conversation snapshot (not timed)."""
    from websockets.asyncio.client import connect

    ws_url = web_url.replace("http://", "ws://") + f"/ws/chat/{seat.conversation_id}/"
    ws = await connect(
        ws_url,
        origin=web_url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"sb_visitor={seat.cookie}"},
        proxy=None,
        open_timeout=timeout_s,
        ping_interval=None,
        max_size=2**20,
    )
    try:
        async with asyncio.timeout(timeout_s):
            snapshot = json.loads(await ws.recv())
        if snapshot.get("type") != "conversation":
            raise BenchError(f"expected the conversation snapshot, got {snapshot}")
    except BaseException:
        await ws.close()
        raise
    return ws


STALL_RESUME_S = 5.0


async def customer_call(
    ws: Any, text: str, tokens: list[str], barrier: asyncio.Barrier, result: CallResult,
    timeout_s: float,
) -> None:  # fmt: skip
    """Send one message at the barrier and read its reply until reply.done."""
    client_id = f"bench-{result.index}-{secrets.token_hex(4)}"
    payload = json.dumps({"type": "message", "client_id": client_id, "text": text})
    deltas: dict[int, str] = {}
    seen: set[int] = set()
    last_start_seq, starts = 0, 0
    done: dict[str, Any] | None = None
    await barrier.wait()
    result.sent_at = time.time()
    t0 = time.perf_counter()

    def contiguous() -> int:
        n = 0
        while n + 1 in seen:
            n += 1
        return n

    async def resume() -> None:
        # What the browser does: live frames go over pub/sub, which may drop one.
        if result.reply_id:
            result.resumes += 1
            await ws.send(
                json.dumps({"type": "resume", "reply_id": result.reply_id, "after": contiguous()})
            )

    try:
        async with asyncio.timeout(timeout_s):
            await ws.send(payload)
            while done is None or contiguous() < int(done["seq"]) - 1:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=STALL_RESUME_S)
                except TimeoutError:
                    await resume()
                    continue
                frame = json.loads(raw)
                now = time.perf_counter()
                kind = frame.get("type")
                if kind == "ack":
                    result.ack_ms = (now - t0) * 1000
                    result.reply_id = frame.get("reply_id")
                    continue
                if kind == "error":
                    raise BenchError(f"error frame: {frame}")
                if not str(kind).startswith("reply."):
                    continue  # "turn": the customer's own message
                seq = int(frame["seq"])
                if seq in seen:
                    result.dup_frames += 1
                    continue
                seen.add(seq)
                if kind == "reply.waiting":
                    result.waiting_lines += 1
                elif kind == "reply.start":
                    starts += 1
                    if result.start_frame_ms is None:
                        result.start_frame_ms = (now - t0) * 1000
                    last_start_seq = max(last_start_seq, seq)
                elif kind == "reply.delta":
                    deltas[seq] = frame.get("text", "")
                    if result.ttft_ms is None and frame.get("text"):
                        result.ttft_ms = (now - t0) * 1000
                        result.first_delta_at = result.sent_at + result.ttft_ms / 1000
                elif kind == "reply.done" and done is None:
                    done = frame
                    result.total_ms = (now - t0) * 1000
                    if contiguous() < seq - 1:
                        await resume()  # frames before the end went missing
    except TimeoutError:
        result.error = f"timeout after {timeout_s:.0f}s"
    except Exception as exc:  # noqa: BLE001 - any failure of a call is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    result.restarts = max(0, starts - 1)
    result.frames = len(deltas)
    streamed = "".join(deltas[s] for s in sorted(deltas) if s > last_start_seq)
    if done is None:
        check_text(result, streamed, tokens)
        return
    result.done_status = done.get("status")
    result.missing_seqs = len(set(range(1, int(done["seq"]))) - seen)
    result.matches_done = streamed == done.get("text")
    check_text(result, streamed, tokens)
    if done.get("status") != "done":
        result.error = f"reply.done status {done.get('status')!r}: {done.get('error')}"
    else:
        result.ok = result.ttft_ms is not None
        if not result.ok:
            result.error = "reply.done without any reply.delta"


async def bot_round(
    web_url: str, seats: list[Seat], prompts: list[list[dict[str, str]]], opts: Options,
    before_send: Callable[[], None] | None = None,
) -> list[CallResult]:  # fmt: skip
    """N customers connect (untimed), then all send one message at the same moment. Each
    reply must be exactly what the fake model answers to the prompt Support Bot sends."""
    from tests.fake_llm import expected_reply

    results = [CallResult(i, messages[-1]["content"]) for i, messages in enumerate(prompts)]
    gate = asyncio.Semaphore(50)

    async def connect_one(seat: Seat, result: CallResult) -> Any:
        async with gate:
            try:
                return await connect_customer(web_url, seat, opts.timeout_s)
            except Exception as exc:  # noqa: BLE001
                result.error = f"connect: {type(exc).__name__}: {exc}"[:300]
                return None

    sockets = await asyncio.gather(
        *(connect_one(seat, result) for seat, result in zip(seats, results, strict=True))
    )
    connected = [(ws, r) for ws, r in zip(sockets, results, strict=True) if ws is not None]
    if before_send:
        before_send()
    barrier = asyncio.Barrier(max(1, len(connected)))
    try:
        await asyncio.gather(
            *(
                customer_call(
                    ws,
                    result.text_sent,
                    expected_reply(prompts[result.index], opts.reply_tokens),
                    barrier,
                    result,
                    opts.timeout_s,
                )
                for ws, result in connected
            )
        )
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await asyncio.gather(*(ws.close() for ws, _ in connected), return_exceptions=True)
    return results


def add_server_timings(results: list[CallResult]) -> None:
    """Fill in when the web process stored the message, when a worker claimed the reply and
    when the worker saw the first token, from the rows the app wrote (same host, same clock)."""
    from django.db import connections

    from conversations.models import Turn

    by_reply = {r.reply_id: r for r in results if r.reply_id and r.sent_at}
    rows = Turn.objects.filter(pk__in=list(by_reply)).values(
        "pk", "claimed_at", "first_token_ms", "reply_to__created_at"
    )
    for row in rows:
        result = by_reply[row["pk"]]
        assert result.sent_at is not None
        stored = row["reply_to__created_at"]
        if stored is None:
            continue
        result.stored_ms = (stored.timestamp() - result.sent_at) * 1000
        if row["claimed_at"]:
            result.claimed_ms = (row["claimed_at"].timestamp() - result.sent_at) * 1000
        if row["first_token_ms"] is not None:
            result.worker_first_token_ms = result.stored_ms + row["first_token_ms"]
    connections.close_all()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


def run_async(coro: Any) -> Any:
    """Run one stage on a fresh (uvloop) event loop; Ctrl-C, SIGTERM and the time limit cancel
    every task and then raise KeyboardInterrupt, even if a library swallowed the cancellation."""
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    async def stage() -> Any:
        loop = asyncio.get_running_loop()

        def stop(signum: int) -> None:
            received.append(signum)
            for task in asyncio.all_tasks(loop):
                task.cancel()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        return await coro

    try:
        try:
            import uvloop

            result = uvloop.run(stage())
        except ImportError:
            result = asyncio.run(stage())
    except asyncio.CancelledError:
        if not received:
            raise
        result = None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(
            "time limit" if received[0] == signal.SIGALRM else f"signal {received[0]}"
        )
    return result


# --- Resource counters: CPU per process, Redis commands, Postgres sessions -----------------


MACHINE = "(whole machine)"


@dataclass
class Counters:
    cpu_s: dict[str, float]
    redis_calls: dict[str, int]
    pg: dict[str, int]
    at: float


def read_counters(stack: Stack, embedded: bool) -> Counters:
    import psutil

    cpu: dict[str, float] = {}

    def add(group: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            cpu[group] = cpu.get(group, 0.0) + times.user + times.system

    if stack.fake:
        add("fake model server", stack.fake.process.pid)
    if stack.web:
        for pid in stack.web.pids()[1:] or stack.web.pids():
            add("web (uvicorn)", pid)
    for worker in stack.workers:
        for pid in worker.pids():
            add("Celery workers", pid)
    add("bench client", os.getpid())
    machine = psutil.cpu_times()
    cpu[MACHINE] = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
    if stack.redis_pid:
        add("redis-server", stack.redis_pid)
    if not embedded:
        for proc in psutil.process_iter(["name"]):  # read-only: the server's CPU time
            if (proc.info["name"] or "").startswith("postgres"):
                add("postgres", proc.pid)
    redis_calls: dict[str, int] = {}
    pg: dict[str, int] = {}
    with contextlib.suppress(Exception):
        import redis

        stats = redis.Redis.from_url(stack.redis_url).info("commandstats")
        redis_calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    if not embedded:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = %s",
                    (BENCH_DB,),
                ).fetchone()
                if row:
                    pg = {"transactions": int(row[0]), "sessions": int(row[1])}
    return Counters(cpu, redis_calls, pg, time.monotonic())


def counter_delta(before: Counters, after: Counters) -> dict[str, Any]:
    redis_delta = {
        k: v - before.redis_calls.get(k, 0)
        for k, v in after.redis_calls.items()
        if v - before.redis_calls.get(k, 0) > 0
    }
    cpu = {k: v - before.cpu_s.get(k, 0.0) for k, v in after.cpu_s.items()}
    machine = cpu.pop(MACHINE, 0.0)
    # Everything else on the machine (other users' tests, the kernel): noise to know about.
    cpu["rest of machine"] = max(0.0, machine - sum(cpu.values()))
    return {
        "wall_s": round(after.at - before.at, 3),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "redis_calls": dict(sorted(redis_delta.items(), key=lambda kv: -kv[1])),
        "postgres": {k: v - before.pg.get(k, 0) for k, v in after.pg.items()},
    }


# --- Profiling (optional) --------------------------------------------------------------------


@dataclass
class Profilers:
    processes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, stack: Stack, out_dir: Path) -> None:
        exe = Path(PYTHON).parent / "py-spy"
        if not exe.exists():
            print("  (py-spy not installed in the virtualenv: no profiles)")
            return
        assert stack.web is not None
        targets = [(f"web-{pid}", pid) for pid in stack.web.pids()[1:] or stack.web.pids()]
        targets += [(f"{w.name}-{w.process.pid}", w.process.pid) for w in stack.workers]
        for name, pid in targets:
            path = out_dir / f"profile-{name}.txt"
            process = subprocess.Popen(
                [str(exe), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                 "--output", str(path), "--nonblocking", "--threads", "--gil"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.processes.append((process, path))
        time.sleep(1.0)  # let py-spy attach

    def stop(self) -> list[Path]:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, _ in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        paths = [path for _, path in self.processes if path.exists()]
        self.processes.clear()
        return paths


# --- Stage 4: summarise, print, save ---------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def p50_p99(values: list[float]) -> tuple[float | None, float | None]:
    return percentile(values, 50), percentile(values, 99)


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass
class RoundSummary:
    n: int
    direct_ttft: tuple[float | None, float | None]
    bot_ttft: tuple[float | None, float | None]
    overhead: tuple[float | None, float | None]
    direct_total_p50: float | None
    bot_total: tuple[float | None, float | None]
    frames_per_reply: float | None
    lost_tokens: int
    lost_chars: int
    extra_chars: int
    dup_frames: int
    missing_seqs: int
    restarts: int
    resumes: int
    text_mismatches: int
    failed: int
    direct_failed: int
    errors: list[str]
    # Support Bot time, split by where it went (p50, p99 in ms).
    breakdown: dict[str, tuple[float | None, float | None]]
    resources: dict[str, Any]
    # Under --budget-rpm/--budget-tpm: what the fake model answered during the round (its 429s
    # are what the budget must prevent), and whether replies started in the order their
    # messages were stored.
    model_requests: int | None = None
    model_429s: int | None = None
    out_of_order: int = 0
    worst_overtake_ms: float = 0.0
    waiting_lines: int = 0


def summarise(
    n: int, direct: list[CallResult], bot: list[CallResult], resources: dict[str, Any]
) -> RoundSummary:
    ok_direct = [r for r in direct if r.ok]
    ok_bot = [r for r in bot if r.ok]
    # Replies that reached reply.done with status "done": lost/dup count only these (the
    # others are `failed`).
    finished = [r for r in bot if r.done_status == "done"]
    direct_ttft = p50_p99([r.ttft_ms for r in ok_direct if r.ttft_ms is not None])
    bot_ttft = p50_p99([r.ttft_ms for r in ok_bot if r.ttft_ms is not None])

    def stage(fn: Callable[[CallResult], float | None]) -> tuple[float | None, float | None]:
        return p50_p99([v for r in ok_bot if (v := fn(r)) is not None])

    breakdown = {
        "send → ack": stage(lambda r: r.ack_ms),
        "send → message stored (web)": stage(lambda r: r.stored_ms),
        "stored → claimed by worker": stage(lambda r: _sub(r.claimed_ms, r.stored_ms)),
        "claimed → reply.start at client": stage(lambda r: _sub(r.start_frame_ms, r.claimed_ms)),
        "claimed → first token in worker": stage(
            lambda r: _sub(r.worker_first_token_ms, r.claimed_ms)
        ),
        "first token in worker → client": stage(lambda r: _sub(r.ttft_ms, r.worker_first_token_ms)),
    }
    errors = sorted({r.error for r in [*direct, *bot] if r.error})
    out_of_order, worst_overtake_ms = order_of_starts(bot)
    model = resources.get("model") or {}
    return RoundSummary(
        n=n,
        direct_ttft=direct_ttft,
        bot_ttft=bot_ttft,
        overhead=(_sub(bot_ttft[0], direct_ttft[0]), _sub(bot_ttft[1], direct_ttft[1])),
        direct_total_p50=percentile([r.total_ms for r in ok_direct if r.total_ms], 50),
        bot_total=p50_p99([r.total_ms for r in ok_bot if r.total_ms is not None]),
        frames_per_reply=statistics.mean(r.frames for r in ok_bot) if ok_bot else None,
        lost_tokens=sum(r.lost_tokens for r in finished),
        lost_chars=sum(r.lost_chars for r in finished),
        extra_chars=sum(r.extra_chars for r in finished),
        dup_frames=sum(r.dup_frames for r in finished),
        missing_seqs=sum(r.missing_seqs for r in finished),
        restarts=sum(r.restarts for r in finished),
        resumes=sum(r.resumes for r in bot),
        text_mismatches=sum(1 for r in finished if not (r.matches_expected and r.matches_done)),
        failed=sum(1 for r in bot if not r.ok),
        direct_failed=sum(1 for r in direct if not r.ok),
        errors=errors[:10],
        breakdown=breakdown,
        resources=resources,
        model_requests=model.get("requests"),
        model_429s=model.get("429s"),
        out_of_order=out_of_order,
        worst_overtake_ms=worst_overtake_ms,
        waiting_lines=sum(r.waiting_lines for r in bot),
    )  # fmt: skip


def order_of_starts(bot: list[CallResult]) -> tuple[int, float]:
    """Replies whose text started more than OVERTAKE_TOLERANCE_S after that of a reply to a
    message stored after theirs (reply ids follow the order messages were stored), and the
    worst such lag in ms (0 when every reply started no later than those after it)."""
    started = sorted((r.reply_id, r.first_delta_at) for r in bot if r.reply_id and r.first_delta_at)
    out_of_order, worst, earliest_later = 0, 0.0, math.inf
    for _reply_id, at in reversed(started):
        lag = at - earliest_later
        worst = max(worst, lag)
        if lag > OVERTAKE_TOLERANCE_S:
            out_of_order += 1
        earliest_later = min(earliest_later, at)
    return out_of_order, worst * 1000


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def pair(values: tuple[float | None, float | None]) -> str:
    return f"{fmt(values[0])} / {fmt(values[1])}"


def environment(opts: Options, stack: Stack, load_at_start: tuple[float, ...]) -> dict[str, Any]:
    import celery
    import channels
    import channels_redis
    import django
    import openai
    import psutil
    import uvicorn

    return {
        "path": stack.path,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "python": platform.python_version(),
        "versions": {
            "django": django.get_version(),
            "channels": channels.__version__,
            "channels_redis": channels_redis.__version__,
            "celery": celery.__version__,
            "uvicorn": uvicorn.__version__,
            "openai": openai.__version__,
        },
        "web_processes": opts.web_processes,
        "workers": opts.workers,
        "worker_threads": opts.worker_threads,
        "fake_model": {
            "ttft_ms": opts.ttft_ms,
            "tokens_per_s": opts.tokens_per_s,
            "reply_tokens": opts.reply_tokens,
        },
        "extra_env": opts.extra_env,
        "worker_nice": opts.worker_nice,
        "budget": {"requests_per_min": opts.budget_rpm, "tokens_per_min": opts.budget_tpm},
        "logs": str(stack.log_dir),
    }


def print_report(env: dict[str, Any], rows: list[RoundSummary]) -> None:
    print()
    print(
        f"Environment: {env['cores']} cores, {env['memory_gib']} GiB, Python {env['python']}, "
        f"load average at start {env['load_average_at_start'][0]:.2f}; path: {env['path']}"
    )
    print(
        f"  {env['web_processes']} web processes (uvicorn, uvloop/httptools), {env['workers']} "
        f"Celery workers × {env['worker_threads']} threads; fake model: TTFT "
        f"{env['fake_model']['ttft_ms']} ms, {env['fake_model']['tokens_per_s']:g} tokens/s, "
        f"{env['fake_model']['reply_tokens']} tokens a reply"
        + (f"; extra env {env['extra_env']}" if env["extra_env"] else "")
    )
    print()
    header = (
        f"{'N':<5}{'direct TTFT p50/p99 (ms)':<27}{'Support Bot TTFT p50/p99 (ms)':<32}"
        f"{'overhead p50/p99 (ms)':<24}{'total p50 (ms)':<17}{'frames/reply':<14}"
        f"{'lost':<6}{'dup':<5}{'failed':<8}{'direct failed'}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        frames = "–" if row.frames_per_reply is None else f"{row.frames_per_reply:.1f}"
        print(
            f"{row.n:<5}{pair(row.direct_ttft):<27}{pair(row.bot_ttft):<32}"
            f"{pair(row.overhead):<24}{fmt(row.bot_total[0]):<17}{frames:<14}"
            f"{row.lost_tokens:<6}{row.dup_frames:<5}{row.failed:<8}{row.direct_failed}"
        )
    print()
    print(TARGET)
    for row in rows:
        notes = []
        if row.missing_seqs or row.text_mismatches or row.restarts or row.extra_chars:
            notes.append(
                f"missing seqs {row.missing_seqs}, text mismatches {row.text_mismatches}, "
                f"restarts {row.restarts}, lost chars {row.lost_chars}, "
                f"extra chars {row.extra_chars}"
            )
        notes.append(
            f"resumes sent {row.resumes} (duplicate frames seen {row.dup_frames}: replays "
            "after a resume; the client keeps each seq once, so no text is doubled)"
        )
        if row.errors:
            notes.append("errors: " + " | ".join(row.errors[:3]))
        if notes:
            print(f"  N={row.n}: " + "; ".join(notes))
    budget = env.get("budget") or {}
    for row in rows:
        if row.model_429s is None:
            continue
        limits = ", ".join(
            f"{budget[k]} {k.replace('_per_min', '')}/min"
            for k in ("requests_per_min", "tokens_per_min")
            if budget.get(k)
        )
        print(
            f"  N={row.n} under a budget of {limits}: the model got {row.model_requests} "
            f"requests and answered {row.model_429s} of them 429; replies started out of the "
            f"order their messages came (by > {OVERTAKE_TOLERANCE_S:g} s): {row.out_of_order}, "
            f"worst overtaking {row.worst_overtake_ms:.0f} ms; 'one moment' lines sent: "
            f"{row.waiting_lines}; TTFT p50 / p99 {pair(row.bot_ttft)} ms"
        )
    print()
    print("Where Support Bot's time goes, p50 / p99 (ms):")
    stages = list(rows[0].breakdown) if rows else []
    print(f"{'N':<5}" + "".join(f"{s:<34}" for s in stages))
    for row in rows:
        print(f"{row.n:<5}" + "".join(f"{pair(row.breakdown[s]):<34}" for s in stages))
    print()
    print("Resources during each Support Bot round (CPU seconds; Redis commands; Postgres):")
    for row in rows:
        res = row.resources
        frames = row.frames_per_reply or 0
        total_frames = max(1.0, row.n * (frames + 2))  # deltas + start + done
        redis_total = sum(res["redis_calls"].values())
        top = ", ".join(f"{k} {v}" for k, v in list(res["redis_calls"].items())[:6])
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_s"].items())
        pg = res["postgres"]
        pg_text = (
            f"; Postgres: {pg.get('sessions', 0) / row.n:.1f} new sessions and "
            f"{pg.get('transactions', 0) / row.n:.1f} transactions a reply"
            if pg
            else ""
        )
        direct_cpu = ", ".join(
            f"{k} {v:.2f}" for k, v in res["direct_round"]["cpu_s"].items() if v >= 0.01
        )
        print(f"  N={row.n}: wall {res['wall_s']:.1f} s; CPU: {cpu}")
        print(
            f"        (direct round: wall {res['direct_round']['wall_s']:.1f} s; CPU: {direct_cpu})"
        )
        print(
            f"        Redis: {redis_total} commands = {redis_total / total_frames:.1f} a frame "
            f"({top}){pg_text}"
        )


def save_json(env: dict[str, Any], rows: list[RoundSummary], raw: dict[str, Any]) -> Path:
    BENCH_DIR.mkdir(exist_ok=True)
    path = BENCH_DIR / f"load-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"target": TARGET, "environment": env, "rounds": [asdict(r) for r in rows], "raw": raw},
            indent=1,
            default=str,
        )
    )
    return path


# --- Main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Ctrl-C, SIGTERM and the overall time limit all end in the same clean-up."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt("time limit" if signum == signal.SIGALRM else f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS}
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in previous.items():
            signal.signal(s, handler)


def fake_control(stack: Stack, action: str, body: dict[str, Any] | None = None) -> Any:
    """The fake model server's control API (tests/fake_llm.py): GET, or POST with a body."""
    import httpx2

    url = f"{stack.fake_url}/_control/{action}"
    if body is None:
        response = httpx2.get(url, timeout=10)
    else:
        response = httpx2.post(url, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def arm_budget(stack: Stack, opts: Options) -> None:
    """Right before the customers send: the fake enforces the budget from a full bucket, its
    record of requests starts empty, and the app's shared budget (in Redis) starts full too,
    whatever the round before took from it."""
    import redis

    fake_control(stack, "reset", {})
    fake_control(
        stack,
        "budget",
        {"requests_per_min": opts.budget_rpm, "tokens_per_min": opts.budget_tpm},
    )
    client = redis.Redis.from_url(stack.redis_url)
    pattern = f"{stack.env['REDIS_KEY_PREFIX']}model-budget:*"
    for found in client.scan_iter(match=pattern, count=1000):
        client.delete(found)


def budget_outcome(stack: Stack) -> dict[str, int]:
    """What the fake model answered during the round; then the budget is off again, so that
    the next round's direct calls (the baseline) are not limited."""
    requests = fake_control(stack, "requests")
    fake_control(stack, "budget", {"requests_per_min": 0, "tokens_per_min": 0})
    return {
        "requests": len(requests),
        "429s": sum(1 for r in requests if r.get("outcome") == "429"),
    }


def run_round(
    n: int, stack: Stack, seats: list[Seat], opts: Options, system_prompt: str, label: str,
    profile_dir: Path | None = None,
) -> tuple[list[CallResult], list[CallResult], dict[str, Any]]:  # fmt: skip
    texts = [question(label, i) for i in range(n)]
    prompts = [grounded_messages(system_prompt, text) for text in texts]
    print(f"  N={n}: direct calls…", end="", flush=True)
    direct_before = read_counters(stack, opts.embedded)
    direct = run_async(direct_round(stack.fake_url, prompts, opts))
    direct_resources = counter_delta(direct_before, read_counters(stack, opts.embedded))
    time.sleep(0.5)
    print(" Support Bot customers…", end="", flush=True)
    profilers = Profilers()
    counters: list[Counters] = []

    budgeted = bool(opts.budget_rpm or opts.budget_tpm)

    def before_send() -> None:
        if budgeted:
            arm_budget(stack, opts)
        if profile_dir is not None:
            profilers.start(stack, profile_dir)
        counters.append(read_counters(stack, opts.embedded))

    try:
        bot = run_async(bot_round(stack.web_url, seats, prompts, opts, before_send))
        counters.append(read_counters(stack, opts.embedded))
    finally:
        profiles = profilers.stop()
    add_server_timings(bot)
    resources = counter_delta(counters[0], counters[1]) if len(counters) == 2 else {}
    resources["direct_round"] = direct_resources
    if budgeted:
        resources["model"] = budget_outcome(stack)
    if profiles:
        resources["profiles"] = [str(p) for p in profiles]
    ok = sum(r.ok for r in bot)
    print(f" {ok}/{n} replies ok.")
    time.sleep(1.0)  # let the workers finish storing before the next round
    return direct, bot, resources


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    started = datetime.now()
    load_at_start = os.getloadavg()
    log_dir = BENCH_DIR / f"logs-{started.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"Support Bot load benchmark ({'embedded' if opts.embedded else 'production'} path)")
    print(f"Starting the fake model, database, web and workers (logs in {log_dir})…")
    rows: list[RoundSummary] = []
    raw: dict[str, Any] = {}
    with bounded(opts.max_run_s), contextlib.ExitStack() as cleanup:
        try:
            stack = start_stack(opts, cleanup, log_dir)
            from django.conf import settings

            system_prompt = settings.SYSTEM_PROMPT.format(company=settings.COMPANY_NAME)
            warm = max(opts.n_values) if opts.warmup else 0
            seats = create_seats(warm + sum(opts.n_values))
            print("Ready.")
            if warm:
                print("Warm-up round (not reported):")
                _, bot, _ = run_round(warm, stack, seats[:warm], opts, system_prompt, "warmup")
                raw["warmup"] = [asdict(r) for r in bot]
            offset = warm
            print("Rounds:")
            for n in opts.n_values:
                profile_dir = log_dir if opts.profile and n == max(opts.n_values) else None
                direct, bot, resources = run_round(
                    n, stack, seats[offset : offset + n], opts, system_prompt, f"n{n}", profile_dir
                )
                offset += n
                rows.append(summarise(n, direct, bot, resources))
                raw[f"n{n}"] = {
                    "direct": [asdict(r) for r in direct],
                    "support_bot": [asdict(r) for r in bot],
                }
            env = environment(opts, stack, load_at_start)
        except BenchError as exc:
            print(f"\nBenchmark stopped: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print(f"\nInterrupted ({exc or 'Ctrl-C'}); stopping everything…", file=sys.stderr)
            return 130
        finally:
            print("Stopping the processes…", flush=True)
    print_report(env, rows)
    path = save_json(env, rows, raw)
    print(f"\nResults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
