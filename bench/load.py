"""Load benchmark: time to first token through Support Bot, against the model server itself.

    .venv/bin/python bench/load.py                 # production path: Postgres + Redis
    .venv/bin/python bench/load.py --embedded      # default path: SQLite + embedded Redis
    .venv/bin/python bench/load.py --compare HEAD~1   # and the commit before, in the same run

Starts everything on loopback (fake OpenAI-compatible server, database, ASGI server, Celery
workers), then for each round measures the floor (streaming calls straight to the fake server)
and the same load through Support Bot's websocket: bursts of N customers at once, open-loop
rounds (C connected customers, Poisson arrivals at R messages/s), and K idle sockets. It
reports time to first token against the floor, lost/doubled/failed replies, and the CPU each
process kind spends per reply, each against the issue's targets. See bench/README.md.
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
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable

from support_bot.processes import web_command, worker_command  # noqa: E402

BENCH_DIR = ROOT / ".bench"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PROD_REDIS_URL = "redis://127.0.0.1:6379/0"
# Unique to the run (another bench may be running beside this one); dropped at the end.
RUN_ID = os.getpid()
# Issue 15's targets; each is checked against the rounds that measure it (see evaluate_targets).
TARGETS = {
    "one": "one customer ≤ +25 ms p50 over the floor (one customer at a time)",
    "fifty": "50 at once p99 ≤ 1.5× the floor (N=50)",
    "two_hundred": "200 at once p99 ≤ 3× the floor with no resume needed (N=200)",
    "open": "1,000 connected at 20 messages/s p99 ≤ 1.25× the floor (open 1000@20/s)",
    "idle": "5,000 idle connected customers held, web memory ≤ 40 KB per idle socket (goal)",
    "embedded": "the embedded default at 50 at once within 2× of the production path (p99)",
    "cpu": "our CPU ≤ 25 ms per reply at N=50 (web + worker + Redis + Postgres)",
    "clean": "nothing lost, doubled or failed in any round",
}
# Variables of the parent shell that would change which path the app takes: never inherited.
APP_VARIABLES = (
    "DATABASE_URL", "DATABASE_NAME", "DATABASE_CONN_MAX_AGE", "REDIS_URL", "CELERY_BROKER_URL",
    "REDIS_KEY_PREFIX", "SUPPORT_BOT_VAR_DIR", "LLM_PROVIDER", "OPENAI_API_KEY",
    "OPENAI_BASE_URL", "OPENAI_MODEL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH",
)  # fmt: skip
IDLE_HOLD_S = 10.0  # how long the idle sockets are held before the web processes are measured
# Under --budget-rpm a reply may wait its turn up to REPLY_DEADLINE_S (120 s by default).
BUDGET_TIMEOUT_S = 130.0
# A reply that starts this much later than one to a message stored after it is out of order.
OVERTAKE_TOLERANCE_S = 1.0


class BenchError(Exception):
    """A stage could not run (a process did not start, the database is unreachable...)."""


# --- Options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundSpec:
    """A burst (N customers send at the same moment), an open-loop round (C customers
    connected, messages at Poisson arrivals averaging `rate` a second for `seconds`), or one
    customer at a time ("serial": `questions` customers in turn, each asking once the reply
    before has ended, so the one-customer target has a p50 of many, not one sample)."""

    kind: str  # "burst" | "open" | "serial"
    n: int  # burst: customers at once; open: customers connected; serial: 1
    rate: float = 0.0
    seconds: float = 0.0
    questions: int = 0  # serial: how many customers ask, one after another

    @property
    def label(self) -> str:
        if self.kind == "burst":
            return f"N={self.n}"
        if self.kind == "serial":
            return f"1 at a time ×{self.questions}"
        return f"open {self.n}@{self.rate:g}/s×{self.seconds:g}s"

    @property
    def key(self) -> str:
        if self.kind == "burst":
            return f"n{self.n}"
        if self.kind == "serial":
            return f"serial{self.questions}"
        return f"open{self.n}-{self.rate:g}-{self.seconds:g}"


@dataclass(frozen=True)
class Options:
    n_values: list[int]
    open_rounds: list[RoundSpec]
    idle: int
    compare: str | None
    also_embedded: list[int]
    seed: int
    ttft_ms: int
    tokens_per_s: float
    reply_tokens: int
    # Grounded replies (every bench question's) quote their passages on to reply_tokens; with
    # --first-sentence-replies, one sentence of each (~27 tokens), as the rounds in
    # docs/performance.md before "Replies as long as the issue's" were measured.
    full_grounded: bool
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
    json_path: Path | None
    # Questions in the one-customer-at-a-time round (0: none).
    one_at_a_time: int = 0
    # Processes the floor's direct calls of a burst or open round are shared among
    # (bench/floor_client.py); 1: in the bench's own process, as before stop 34.
    floor_processes: int = 2
    # The model account's budget (requests, tokens a minute; 0: none): the fake server enforces
    # it with 429s during every Support Bot round, and each stack's app is given the same.
    budget_rpm: int = 0
    budget_tpm: int = 0
    # Extra environment for the --compare stack only (on top of extra_env): an ablation, e.g.
    # `--compare HEAD --base-set KB_EMBEDDINGS=off`, measured against this code in one run.
    base_extra_env: dict[str, str] = field(default_factory=dict)
    # Whether a stack's replies must be exactly the floor's: not where --base-set changes what
    # it sends the model (another retrieval, another prompt); each reply is then checked
    # against its own reply.done text, as a second message's is.
    replies_as_floor: bool = True

    @property
    def budgeted(self) -> bool:
        return bool(self.budget_rpm or self.budget_tpm)


def parse_open(parser: argparse.ArgumentParser, values: list[str]) -> list[RoundSpec]:
    rounds = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                c, r, s = item.split(":")
                spec = RoundSpec("open", int(c), float(r), float(s))
            except ValueError:
                parser.error(
                    f"--open needs C:R:S (customers:messages a second:seconds), got {item!r}"
                )
            if spec.n < 1 or spec.rate <= 0 or spec.seconds <= 0:
                parser.error(f"--open {item}: C, R and S must be positive")
            rounds.append(spec)
    return rounds


def int_list(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="50,200", help="bursts: customers at once, per round")
    parser.add_argument(
        "--one",
        type=int,
        default=20,
        metavar="K",
        help="one customer at a time: K customers ask in turn, each once the reply before has "
        "ended (the one-customer target's round; 0 for none)",
    )
    parser.add_argument(
        "--open",
        action="append",
        default=None,
        metavar="C:R:S",
        help="open-loop round: C customers connected, Poisson arrivals at R messages/s for S "
        "seconds (repeatable or a comma list; default 1000:20:30; '' for none)",
    )
    parser.add_argument(
        "--idle", type=int, default=5000, help="idle sockets to open and hold (0: no idle round)"
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also run every round on another commit (e.g. HEAD~1), checked out under .bench/",
    )
    parser.add_argument(
        "--also-embedded",
        default="50",
        metavar="N[,N]",
        help="bursts also run on the embedded default (this checkout), for the 2× target "
        "('' for none; ignored with --embedded)",
    )
    parser.add_argument("--seed", type=int, default=1, help="open-loop arrivals and customers")
    parser.add_argument("--ttft-ms", type=int, default=300, help="fake model: time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=50, help="fake model: token rate")
    parser.add_argument("--reply-tokens", type=int, default=150, help="fake model: reply length")
    parser.add_argument(
        "--first-sentence-replies",
        action="store_true",
        help="fake model: grounded replies quote one sentence of each passage (~27 tokens), "
        "as the rounds in docs/performance.md before 2026-12-06 (late) had, instead of "
        "--reply-tokens",
    )
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
    parser.add_argument(
        "--max-run-s",
        type=float,
        default=None,
        help="bound on the whole run (default 1200 s, 2100 s with --compare)",
    )
    add_set_option(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of web and worker processes in the largest burst",
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
    parser.add_argument(
        "--floor-processes",
        type=int,
        default=2,
        metavar="P",
        help="the floor's direct calls of a burst or open-loop round run in P processes of their "
        "own, so the openai client's CPU does not queue them behind the bench (1: in the bench's "
        "process)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    if args.budget_rpm < 0 or args.budget_tpm < 0:
        parser.error("--budget-rpm and --budget-tpm are counts a minute: 0 (off) or more")
    extra = set_option_values(parser, args.set)
    base_extra = set_option_values(parser, args.base_set, "--base-set")
    if base_extra and not args.compare:
        parser.error("--base-set sets the --compare stack's environment: give --compare REV")
    timeout = args.timeout
    if (args.budget_rpm or args.budget_tpm) and timeout < BUDGET_TIMEOUT_S:
        # Under a budget the last of a burst waits its turn, up to the reply's deadline.
        timeout = BUDGET_TIMEOUT_S
    open_rounds = parse_open(parser, ["1000:20:30"] if args.open is None else args.open)
    also_embedded = [] if args.embedded else int_list(args.also_embedded)
    max_run_s = args.max_run_s or (2100.0 if args.compare else 1200.0)
    return Options(
        n_values=int_list(args.n),
        one_at_a_time=max(0, args.one),
        open_rounds=open_rounds,
        idle=max(0, args.idle),
        compare=args.compare,
        also_embedded=also_embedded,
        seed=args.seed,
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        reply_tokens=args.reply_tokens,
        full_grounded=not args.first_sentence_replies,
        web_processes=args.web_processes,
        workers=args.workers,
        worker_threads=args.worker_threads,
        embedded=args.embedded,
        timeout_s=timeout,
        warmup=args.warmup,
        max_run_s=max_run_s,
        extra_env=extra,
        profile=args.profile,
        worker_nice=args.worker_nice,
        json_path=args.json,
        budget_rpm=args.budget_rpm,
        budget_tpm=args.budget_tpm,
        floor_processes=max(1, args.floor_processes),
        base_extra_env=base_extra,
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
    parser.add_argument(
        "--base-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the --compare stack only, e.g. --compare HEAD --base-set "
        "KB_EMBEDDINGS=off: what a part costs, against the same code in the same run",
    )


def set_option_values(
    parser: argparse.ArgumentParser, items: list[str], flag: str = "--set"
) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"{flag} needs NAME=VALUE, got {item!r}")
        extra[name] = value
    return extra


def raise_fd_limit(needed: int) -> int:
    """Sockets are files: raise this process's limit (and so its children's: uvicorn's web
    processes inherit it) to hold every customer's socket. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
    name: str, args: list[str], env: dict[str, str], log_dir: Path, *, append: bool = False,
    cwd: Path = ROOT,
) -> Child:  # fmt: skip
    """Start a child; `append` keeps the log of an earlier run under the same name (a restart).
    `cwd` is the checkout whose code it runs (with PYTHONPATH pointing there too)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab" if append else "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=cwd,
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
    """One copy of the app (web processes, workers, database, Redis prefix) running one
    checkout's code, and where to reach it. The fake model server is shared by every stack."""

    name: str  # "ours", "base" (--compare) or "embedded" (--also-embedded)
    label: str  # for the report, e.g. "ours 82d85a2" or "base d4a0530 (HEAD~1)"
    root: Path  # the checkout whose code the app processes run
    embedded: bool
    env: dict[str, str]
    path: str
    fake: Child
    fake_url: str
    log_dir: Path
    db_alias: str  # this process's Django alias for the stack's database
    db_name: str | None = None  # Postgres database (production path)
    db_url: str = ""
    commit: str = ""
    web_url: str = ""
    web: Child | None = None
    workers: list[Child] = field(default_factory=list)
    worker_names: list[str] = field(default_factory=list)
    redis_url: str = ""
    redis_pid: int | None = None  # only read (CPU time), never signalled
    code_check: str = ""
    # Whether its replies must be the floor's, word for word (not with --base-set's settings).
    replies_as_floor: bool = True

    def children(self) -> list[Child]:
        return [c for c in [self.web, *self.workers] if c is not None]

    def web_pids(self) -> list[int]:
        """uvicorn's web processes (its children), or uvicorn itself with one process."""
        import psutil

        if self.web is None:
            return []
        pids = []
        for pid in self.web.pids()[1:]:
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" not in " ".join(psutil.Process(pid).cmdline()):
                    pids.append(pid)
        return pids or self.web.pids()[:1]


def start_fake_llm(opts: Options, log_dir: Path, env: dict[str, str]) -> tuple[Child, str]:
    port = free_port()
    child = spawn(
        "fake_llm",
        [
            PYTHON, "-m", "tests.fake_llm", "--host", "127.0.0.1", "--port", str(port),
            "--ttft-ms", str(opts.ttft_ms), "--tokens-per-s", str(opts.tokens_per_s),
            "--reply-tokens", str(opts.reply_tokens),
            *(["--full-grounded"] if opts.full_grounded else []),
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
    opts: Options, fake_url: str, var_dir: Path | None, services: dict[str, str] | None = None,
    *, root: Path = ROOT, prefix: str = f"sbbench{RUN_ID}:", secret_key: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """The app's environment. Production path (no var_dir): `services` names the database,
    Redis and broker (DATABASE_URL, REDIS_URL, ...), by default the shared Postgres and Redis.
    `root` is the checkout the app runs: first on PYTHONPATH (before the editable install)."""
    env = base_env()
    env.update(
        SECRET_KEY=secret_key or secrets.token_urlsafe(50),
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        STATIC_FROM_FINDERS="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LLM_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=f"{fake_url}/v1",
        OPENAI_MODEL="fake-model",
        REDIS_KEY_PREFIX=prefix,
        LOG_LEVEL="WARNING",
        # Every simulated customer comes from 127.0.0.1: the per-address budgets would be theirs.
        CHAT_IP_RATE_LIMIT="off",
        CHAT_NEW_CONVERSATIONS_PER_IP="off",
        # One embedding cache for every checkout (vectors by text hash): a throwaway worktree
        # would otherwise embed the demo knowledge base from scratch.
        KB_EMBEDDING_CACHE_DIR=str(ROOT / "var" / "cache" / "embeddings"),
    )
    if var_dir is None:
        env.update(
            services
            or {"DATABASE_URL": pg_url(f"support_bot_bench_{RUN_ID}"), "REDIS_URL": PROD_REDIS_URL}
        )
    else:
        env.update(SUPPORT_BOT_VAR_DIR=str(var_dir))
    if opts.budgeted:
        env.update(
            OPENAI_REQUESTS_PER_MIN=str(opts.budget_rpm), OPENAI_TOKENS_PER_MIN=str(opts.budget_tpm)
        )
    env.update(opts.extra_env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root), *([opts.extra_env["PYTHONPATH"]] if opts.extra_env.get("PYTHONPATH") else [])]
    )
    return env


def pg_url(db_name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{db_name}"


def recreate_postgres_database(name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        raise BenchError(f"cannot recreate Postgres database {name}: {exc}") from exc


def drop_postgres_database(name: str) -> None:
    import psycopg

    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn,
    ):
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(env: dict[str, str], log_dir: Path, root: Path = ROOT, name: str = "migrate") -> None:
    """Migrate and load the demo knowledge base: the questions are answered from it."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        for command in (["migrate", "--noinput", "-v", "0"], ["load_demo_kb"]):
            result = subprocess.run(
                [PYTHON, "manage.py", *command],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
            if result.returncode:
                tail = log_path.read_text()[-3000:]
                raise BenchError(f"{command[0]} ({root}) failed:\n{tail}")


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


def start_web(
    opts: Options, env: dict[str, str], log_dir: Path, root: Path = ROOT, name: str = "web"
) -> tuple[Child, str]:
    port = free_port()
    child = spawn(
        name,
        [*web_command("127.0.0.1", port, processes=opts.web_processes),
         "--loop", "uvloop", "--http", "httptools"],
        {**env, "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"},
        log_dir,
        cwd=root,
    )  # fmt: skip
    return child, f"http://127.0.0.1:{port}"


def start_workers(
    opts: Options, env: dict[str, str], log_dir: Path, root: Path = ROOT, prefix: str = ""
) -> tuple[list[Child], list[str]]:
    children, names = [], []
    host = socket.gethostname()
    for i in range(opts.workers):
        name = f"bench{RUN_ID}{prefix}w{i}"
        children.append(
            spawn(
                f"{prefix}worker{i}",
                [
                    *(["nice", "-n", str(opts.worker_nice)] if opts.worker_nice else []),
                    *worker_command(opts.worker_threads, name=f"{name}@%h", loglevel="WARNING"),
                ],
                env,
                log_dir,
                cwd=root,
            )
        )  # fmt: skip
        names.append(f"{name}@{host}")
    return children, names


def wait_for_web(stack: Stack, opts: Options, timeout: float = 90) -> None:
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


def celery_app_for(stack: Stack) -> Any:
    """A Celery client for this stack's broker (its own Redis key prefix)."""
    from celery import Celery

    redis_url = stack.env.get("REDIS_URL") or stack.redis_url
    broker = stack.env.get("CELERY_BROKER_URL") or (
        f"redis+socket://{redis_url.removeprefix('unix://')}"
        if redis_url.startswith("unix://")
        else redis_url
    )
    app = Celery(f"bench-{stack.name}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        broker_connection_retry_on_startup=True,
        broker_transport_options=(
            {"global_keyprefix": stack.env["REDIS_KEY_PREFIX"]}
            if broker.startswith("redis")
            else {}
        ),
    )
    return app


def wait_for_workers(stack: Stack, timeout: float = 90) -> None:
    """Celery logs nothing at WARNING when ready: ask each worker for a pong instead."""
    app = celery_app_for(stack)
    deadline = time.monotonic() + timeout
    missing = set(stack.worker_names)
    try:
        while missing:
            for worker in stack.workers:
                if worker.process.poll() is not None:
                    raise BenchError(f"{worker.name} exited:\n{worker.tail()}")
            for reply in app.control.ping(destination=sorted(missing), timeout=1.0) or []:
                missing -= set(reply)
            if missing and time.monotonic() > deadline:
                raise BenchError(f"workers {sorted(missing)} did not answer a ping in {timeout}s")
    finally:
        app.close()


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


def add_database(alias: str, url: str) -> None:
    """Reach another stack's database from this process under `alias` (seats, timings)."""
    import dj_database_url
    from django.db import connections

    config = dj_database_url.parse(url, conn_max_age=0)
    if config["ENGINE"].endswith("sqlite3"):
        config["OPTIONS"] = {"timeout": 20}
    default = dict(connections.settings["default"])
    connections.settings[alias] = connections.configure_settings(
        {"default": default, alias: config}
    )[alias]


def git(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode:
        raise BenchError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def checkout_worktree(rev: str, cleanup: contextlib.ExitStack) -> tuple[Path, str]:
    """REV in a throwaway worktree under .bench/ (removed at the end): (path, short commit)."""
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
    path = BENCH_DIR / f"base-{RUN_ID}"
    BENCH_DIR.mkdir(exist_ok=True)
    git("worktree", "add", "--detach", str(path), commit)
    cleanup.callback(_remove_worktree, path)
    return path, commit


def _remove_worktree(path: Path) -> None:
    with contextlib.suppress(BenchError):
        git("worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(BenchError):
        git("worktree", "prune")


def check_code_root(stack: Stack) -> str:
    """Make sure the stack's processes run its checkout's code: the very interpreter, cwd and
    environment they were started with import the project from `stack.root`, and each web and
    worker process runs in that folder with that PYTHONPATH."""
    import psutil

    probe = subprocess.run(
        [PYTHON, "-c", "import support_bot, bot, conversations, knowledge; "
         "print(support_bot.__file__, bot.__file__, conversations.__file__, knowledge.__file__)"],
        cwd=stack.root, env=stack.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    files = probe.stdout.split()
    root = str(stack.root.resolve())
    if probe.returncode or len(files) != 4 or not all(f.startswith(root + "/") for f in files):
        raise BenchError(f"{stack.label}: the app would not import {root}'s code: {probe.stdout}"
                         f"{probe.stderr[-1000:]}")  # fmt: skip
    pids = stack.web_pids() + [pid for w in stack.workers for pid in w.pids()]
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if process.cwd() != root or not process.environ().get("PYTHONPATH", "").startswith(
                root
            ):
                raise BenchError(f"{stack.label}: process {pid} does not run from {root}")
    return f"{len(pids)} web/worker processes run from {root} (imports {files[0]})"


def start_app(
    stack: Stack, opts: Options, cleanup: contextlib.ExitStack, var_dir: Path | None
) -> None:
    """Database, migrations, web and workers for one stack (the fake model is already up)."""
    tag = f"{stack.name}-"
    if var_dir is not None:
        from support_bot import embedded_redis

        stack.redis_url = embedded_redis.ensure_running(var_dir / "redis")
        cleanup.callback(embedded_redis.stop, var_dir / "redis")
        stack.redis_pid = int((var_dir / "redis" / "redis.pid").read_text().strip())
    else:
        assert stack.db_name is not None
        recreate_postgres_database(stack.db_name)
        cleanup.callback(drop_postgres_database, stack.db_name)
        stack.redis_url, stack.redis_pid = PROD_REDIS_URL, _redis_server_pid(PROD_REDIS_URL)
        cleanup.callback(_delete_redis_keys, stack.env["REDIS_KEY_PREFIX"])
    migrate(stack.env, stack.log_dir, stack.root, f"{tag}migrate")
    stack.web, stack.web_url = start_web(opts, stack.env, stack.log_dir, stack.root, f"{tag}web")
    cleanup.callback(stack.web.stop)
    stack.workers, stack.worker_names = start_workers(
        opts, stack.env, stack.log_dir, stack.root, tag
    )
    for worker in stack.workers:
        cleanup.callback(worker.stop)


def with_base_settings(opts: Options, env: dict[str, str], label: str) -> tuple[str, bool]:
    """The --compare stack's environment gets --base-set's values; its label says so. Returns
    the label and whether its replies must still be the floor's: not with settings of its own,
    which may change what it sends the model (another retrieval, another prompt)."""
    if not opts.base_extra_env:
        return label, True
    env.update(opts.base_extra_env)
    settings = " ".join(f"{k}={v}" for k, v in opts.base_extra_env.items())
    return f"{label} with {settings}", False


def start_stacks(opts: Options, cleanup: contextlib.ExitStack, log_dir: Path) -> list[Stack]:
    """The fake model, then "ours" (this checkout), and "base" (--compare REV) and "embedded"
    (--also-embedded) beside it. Every stack shares the fake model, the secret key (the bench
    signs each customer's cookie) and, on the production path, Postgres and Redis, with a
    database and a key prefix of its own."""
    fake, fake_url = start_fake_llm(opts, log_dir, base_env())
    cleanup.callback(fake.stop)
    secret_key = secrets.token_urlsafe(50)
    specs: list[tuple[str, Path, bool, str]] = [("ours", ROOT, opts.embedded, "")]
    if opts.compare:
        base_root, base_commit = checkout_worktree(opts.compare, cleanup)
        specs.append(("base", base_root, opts.embedded, base_commit))
    if opts.also_embedded and not opts.embedded:
        specs.append(("embedded", ROOT, True, ""))
    ours_commit = git("rev-parse", "--short", "HEAD")
    dirty = " +changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    stacks = []
    for i, (name, root, embedded, commit) in enumerate(specs):
        prefix = f"sbbench{RUN_ID}{name[0] if i else ''}:"
        var_dir: Path | None = None
        db_name: str | None = None
        if embedded:
            var_dir = Path(tempfile.mkdtemp(prefix=f"sbbench-{name}-"))
            cleanup.callback(_remove_tree, var_dir)
            env = app_env(opts, fake_url, var_dir, root=root, prefix=prefix, secret_key=secret_key)
            path = "embedded default: SQLite (WAL) + embedded Redis (unix socket)"
            db_url = f"sqlite:///{var_dir / 'db.sqlite3'}"
        else:
            db_name = f"support_bot_bench_{RUN_ID}" + ("" if name == "ours" else f"_{name}")
            db_url = pg_url(db_name)
            services = {"DATABASE_URL": db_url, "REDIS_URL": PROD_REDIS_URL}
            env = app_env(opts, fake_url, None, services, root=root, prefix=prefix,
                          secret_key=secret_key)  # fmt: skip
            path = "production: PostgreSQL + Redis over TCP (loopback)"
        commit = commit or ours_commit + dirty
        label = {"ours": f"ours {commit}", "base": f"base {commit} ({opts.compare})"}.get(
            name, f"embedded {commit}"
        )
        replies_as_floor = True
        if name == "base":
            label, replies_as_floor = with_base_settings(opts, env, label)
        stack = Stack(
            name=name, label=label, root=root, embedded=embedded, env=env, path=path, fake=fake,
            fake_url=fake_url, log_dir=log_dir, db_alias="default" if i == 0 else name,
            db_name=db_name, db_url=db_url, commit=commit, replies_as_floor=replies_as_floor,
        )  # fmt: skip
        print(f"  {stack.label}: {path}, code from {root}")
        start_app(stack, opts, cleanup, var_dir)
        stacks.append(stack)
    setup_django(stacks[0].env)
    for stack in stacks[1:]:
        add_database(stack.db_alias, stack.db_url)
    for stack in stacks:
        wait_for_web(stack, opts)
        wait_for_workers(stack)
        stack.code_check = check_code_root(stack)
        print(f"  {stack.name}: {stack.code_check}")
    return stacks


def _redis_server_pid(url: str) -> int | None:
    import redis

    with contextlib.suppress(Exception):
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    return None


def _remove_tree(path: Path) -> None:
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


def create_seats(count: int, using: str = "default") -> list[Seat]:
    from django.db import connections, transaction

    from conversations.models import Conversation, Customer
    from conversations.visitors import signed_visitor_cookie

    seats: list[Seat] = []
    for start in range(0, count, 2000):
        size = min(2000, count - start)
        customers = [Customer(display_name=f"Bench customer {start + i}") for i in range(size)]
        conversations = [Conversation(customer=customer) for customer in customers]
        with transaction.atomic(using=using):
            insert_rows(customers, using)
            insert_rows(conversations, using)
        seats += [
            Seat(str(c.customer_id), str(c.pk), signed_visitor_cookie(c.customer_id))
            for c in conversations
        ]
    connections.close_all()  # hold no connection during the rounds
    return seats


def insert_rows(objects: list[Any], using: str) -> None:
    """INSERT the objects' fields that the database's table has. A --compare base runs its own
    migrations, so its tables may lack columns this checkout's models added since (the bench
    seeds every stack with this checkout's models); those columns are left out."""
    from django.db import connections

    if not objects:
        return
    connection = connections[using]
    meta = objects[0]._meta
    with connection.cursor() as cursor:
        present = {
            column.name
            for column in connection.introspection.get_table_description(cursor, meta.db_table)
        }
        fields = [field for field in meta.concrete_fields if field.column in present]
        rows = [
            [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
            for obj in objects
        ]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        marks = ", ".join(["%s"] * len(fields))
        # Table and column names come from the models, quoted; the values are parameters.
        insert = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608
        cursor.executemany(insert, rows)


def expected_of_stack(messages: list[dict[str, str]], opts: Options) -> list[str] | None:
    """What a stack's reply to this prompt must be (None: only its own reply.done's text)."""
    return expected_tokens(messages, opts) if opts.replies_as_floor else None


def expected_tokens(messages: list[dict[str, str]], opts: Options) -> list[str]:
    """The reply the run's fake model gives these messages (tests/fake_llm.py)."""
    from tests.fake_llm import expected_reply

    return expected_reply(messages, opts.reply_tokens, full_grounded=opts.full_grounded)


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
    claimed_ms: float | None = None  # the reply's claimed_at: its last lease renewal
    worker_first_token_ms: float | None = None  # worker saw the first token from the model
    # Open-loop rounds: when the message was due (s from the round's start), how late the
    # client sent it (its own event loop busy), and whether its customer had written before in
    # the round (then the prompt has history: only checked against reply.done's text).
    due_s: float | None = None
    late_ms: float | None = None
    repeat: bool = False


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
    client: Any, messages: list[dict[str, str]], tokens: list[str],
    barrier: asyncio.Barrier | None, result: CallResult, timeout_s: float,
) -> None:  # fmt: skip
    if barrier is not None:
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
    client = direct_client(fake_url, opts.timeout_s)
    barrier = asyncio.Barrier(len(prompts))
    results = [CallResult(i, messages[-1]["content"]) for i, messages in enumerate(prompts)]
    calls = []
    for messages, result in zip(prompts, results, strict=True):
        tokens = expected_tokens(messages, opts)
        calls.append(direct_call(client, messages, tokens, barrier, result, opts.timeout_s))
    try:
        await asyncio.gather(*calls)
    finally:
        await client.close()
    return results


# One customer at a time: the pause between one reply's end and the next customer's question,
# so that each asks alone (not while the last reply's socket closes and its row is stored).
SERIAL_PAUSE_S = 1.0


async def direct_serial(
    fake_url: str, prompts: list[list[dict[str, str]]], opts: Options
) -> list[CallResult]:
    """The floor of one customer at a time: the same prompts straight to the fake server, each
    once the call before has ended, on one client (its connection kept, as a server's is)."""
    client = direct_client(fake_url, opts.timeout_s)
    results = [CallResult(i, messages[-1]["content"]) for i, messages in enumerate(prompts)]
    try:
        for messages, result in zip(prompts, results, strict=True):
            if result.index:
                await asyncio.sleep(SERIAL_PAUSE_S)
            tokens = expected_tokens(messages, opts)
            await direct_call(client, messages, tokens, None, result, opts.timeout_s)
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


# As the chat page (static/chat/chat.js): a reply quiet this long is asked to resume, and the
# wait doubles after each ask, up to STALL_RESUME_MAX_S, until a frame arrives.
STALL_RESUME_S = 5.0
STALL_RESUME_MAX_S = 30.0


async def customer_call(
    ws: Any, text: str, tokens: list[str] | None, barrier: asyncio.Barrier | None,
    result: CallResult, timeout_s: float, stale: set[int] | None = None,
) -> None:  # fmt: skip
    """Send one message (at the barrier, if any) and read its reply until reply.done.

    `tokens` is the expected reply (None: only checked against reply.done's text); frames of
    the replies in `stale` (earlier messages on this socket) are skipped."""
    client_id = f"bench-{result.index}-{secrets.token_hex(4)}"
    payload = json.dumps({"type": "message", "client_id": client_id, "text": text})
    deltas: dict[int, str] = {}
    seen: set[int] = set()
    last_start_seq, starts = 0, 0
    done: dict[str, Any] | None = None
    if barrier is not None:
        await barrier.wait()
    result.sent_at = time.time()
    t0 = time.perf_counter()

    def contiguous() -> int:
        # As the page does: a reply.start is applied across a gap (a reply taken over by
        # another worker numbers its frames from attempt x 1,000,000), and counts from there.
        n = last_start_seq
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

    stall_s = STALL_RESUME_S
    try:
        async with asyncio.timeout(timeout_s):
            await ws.send(payload)
            while done is None or contiguous() < int(done["seq"]) - 1:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=stall_s)
                except TimeoutError:
                    await resume()
                    stall_s = min(STALL_RESUME_MAX_S, stall_s * 2)
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
                if stale and frame.get("reply_id") in stale:
                    continue  # an earlier reply of this customer (a late or replayed frame)
                seq = int(frame["seq"])
                if seq in seen:
                    result.dup_frames += 1
                    continue
                seen.add(seq)
                stall_s = STALL_RESUME_S
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
        if tokens is not None:
            check_text(result, streamed, tokens)
        return
    result.done_status = done.get("status")
    result.missing_seqs = len(set(range(max(1, last_start_seq), int(done["seq"]))) - seen)
    result.matches_done = streamed == done.get("text")
    if tokens is None:  # its prompt has history: the stored reply is the reference
        tokens = [str(done.get("text") or "")]
    check_text(result, streamed, tokens)
    if done.get("status") != "done":
        result.error = f"reply.done status {done.get('status')!r}: {done.get('error')}"
    else:
        result.ok = result.ttft_ms is not None
        if not result.ok:
            result.error = "reply.done without any reply.delta"


async def connect_all(
    web_url: str, seats: list[Seat], timeout_s: float, errors: list[str] | None = None
) -> list[Any]:
    """Open every seat's socket, 50 at a time (not timed); None where it failed."""
    gate = asyncio.Semaphore(50)

    async def connect_one(i: int, seat: Seat) -> Any:
        async with gate:
            try:
                return await connect_customer(web_url, seat, timeout_s)
            except Exception as exc:  # noqa: BLE001
                if errors is not None:
                    errors[i] = f"connect: {type(exc).__name__}: {exc}"[:300]
                return None

    return list(await asyncio.gather(*(connect_one(i, seat) for i, seat in enumerate(seats))))


async def close_all(sockets: list[Any]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(30):
            await asyncio.gather(*(ws.close() for ws in sockets if ws), return_exceptions=True)


async def bot_round(
    web_url: str, seats: list[Seat], prompts: list[list[dict[str, str]]], opts: Options,
    before_send: Callable[[], None] | None = None,
) -> list[CallResult]:  # fmt: skip
    """N customers connect (untimed), then all send one message at the same moment. Each
    reply must be exactly what the fake model answers to the prompt Support Bot sends."""
    results = [CallResult(i, messages[-1]["content"]) for i, messages in enumerate(prompts)]
    errors = [""] * len(seats)
    sockets = await connect_all(web_url, seats, opts.timeout_s, errors)
    for result, error in zip(results, errors, strict=True):
        result.error = error
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
                    expected_of_stack(prompts[result.index], opts),
                    barrier,
                    result,
                    opts.timeout_s,
                )
                for ws, result in connected
            )
        )
    finally:
        await close_all([ws for ws, _ in connected])
    return results


# Open-loop rounds: C customers stay connected; messages arrive at Poisson times.


def poisson_arrivals(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times (s from the start) of a Poisson process at `rate` a second."""
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return times
        times.append(t)


async def direct_open_loop(
    fake_url: str, prompts: list[list[dict[str, str]]], due: list[float], opts: Options
) -> list[CallResult]:
    """The floor of an open-loop round: the same prompts straight to the fake server, each
    at its arrival time (the same Poisson draw as Support Bot's customers)."""
    client = direct_client(fake_url, opts.timeout_s)
    results = [CallResult(i, m[-1]["content"], due_s=due[i]) for i, m in enumerate(prompts)]
    expected = [expected_tokens(messages, opts) for messages in prompts]
    try:
        await calls_when_due(client, list(zip(prompts, expected, results, strict=True)),
                             opts.timeout_s)  # fmt: skip
    finally:
        await client.close()
    return results


def direct_client(fake_url: str, timeout_s: float) -> Any:
    """The floor's client: the official one, no retries, straight to the fake server."""
    import openai

    return openai.AsyncOpenAI(
        base_url=f"{fake_url}/v1",
        api_key="sk-bench",
        max_retries=0,
        timeout=openai.Timeout(timeout_s, connect=5),
    )


async def calls_when_due(
    client: Any, calls: list[tuple[list[dict[str, str]], list[str], CallResult]], timeout_s: float
) -> None:
    """Direct calls, each at its result's due_s from now (None: at once), all awaited."""
    tasks = []
    start = time.perf_counter()
    try:
        for messages, tokens, result in calls:
            if result.due_s is not None:
                delay = start + result.due_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.late_ms = max(0.0, -delay * 1000)
            tasks.append(
                asyncio.create_task(direct_call(client, messages, tokens, None, result, timeout_s))
            )
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def bot_open_loop(
    web_url: str, seats: list[Seat], prompts: list[list[dict[str, str]]], due: list[float],
    opts: Options, seed: int, before_send: Callable[[], None] | None = None,
) -> list[CallResult]:  # fmt: skip
    """Every seat connects first (not timed); then each message, at its arrival time, comes
    from a random connected customer with no reply in flight, one that has not written yet in
    this round while there is one (so its prompt is the floor's). A message due while every
    customer waits for a reply is not sent (error "skipped")."""
    results = [CallResult(i, m[-1]["content"], due_s=due[i]) for i, m in enumerate(prompts)]
    expected = [expected_of_stack(messages, opts) for messages in prompts]
    sockets = await connect_all(web_url, seats, opts.timeout_s)
    rng = random.Random(seed)
    fresh = [i for i, ws in enumerate(sockets) if ws is not None]
    rng.shuffle(fresh)
    idle_again: list[int] = []  # customers who wrote in this round and have their reply
    earlier: dict[int, set[int]] = {}  # customer -> reply ids of their earlier messages

    async def send(customer: int, result: CallResult, tokens: list[str] | None) -> None:
        stale = earlier.setdefault(customer, set())
        try:
            await customer_call(
                sockets[customer], result.text_sent, tokens, None, result, opts.timeout_s, stale
            )
        finally:
            if result.reply_id:
                stale.add(result.reply_id)
            idle_again.append(customer)

    if before_send:
        before_send()
    tasks = []
    start = time.perf_counter()
    try:
        for result in results:
            assert result.due_s is not None
            delay = start + result.due_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.late_ms = max(0.0, -delay * 1000)
            tokens: list[str] | None = None
            if fresh:
                customer = fresh.pop()
                tokens = expected[result.index]
            elif idle_again:
                customer = idle_again.pop(rng.randrange(len(idle_again)))
                result.repeat = True
            else:
                result.error = "skipped: every connected customer had a reply in flight"
                continue
            tasks.append(asyncio.create_task(send(customer, result, tokens)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await close_all(sockets)
    return results


# Idle sockets: what holding connected customers costs the web processes.


def rss_bytes(pids: list[int]) -> int:
    import psutil

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


async def idle_round(stack: Stack, seats: list[Seat], opts: Options) -> dict[str, Any]:
    """Open one socket per seat (each its own customer and conversation), hold them
    IDLE_HOLD_S, and read the web processes' memory (RSS, summed over uvicorn's processes)
    before, while held and after closing; and their CPU to connect and to hold."""
    pids = stack.web_pids()
    gc_wait = 1.0
    await asyncio.sleep(gc_wait)
    before_rss, before = rss_bytes(pids), read_counters(stack)
    errors = [""] * len(seats)
    t0 = time.perf_counter()
    sockets = await connect_all(stack.web_url, seats, opts.timeout_s, errors)
    connect_s = time.perf_counter() - t0
    connected = sum(ws is not None for ws in sockets)
    after_connect = read_counters(stack)
    try:
        await asyncio.sleep(IDLE_HOLD_S)
        held_rss, held = rss_bytes(pids), read_counters(stack)
    finally:
        await close_all(sockets)
    await asyncio.sleep(2.0)
    closed_rss = rss_bytes(pids)
    connect_cpu = counter_delta(before, after_connect)["cpu_s"]
    hold_cpu = counter_delta(after_connect, held)["cpu_s"]
    failures = Tally(e.split(":")[1].strip() if ":" in e else e for e in errors if e)
    return {
        "sockets": len(seats),
        "connected": connected,
        "connect_s": round(connect_s, 2),
        "web_processes": len(pids),
        "web_rss_mib": {
            "before": round(before_rss / 2**20, 1),
            "held": round(held_rss / 2**20, 1),
            "after_close": round(closed_rss / 2**20, 1),
        },
        "kb_per_socket": (
            round((held_rss - before_rss) / 1024 / connected, 1) if connected else None
        ),
        "web_cpu_ms_per_connect": round(
            connect_cpu.get("web (uvicorn)", 0) * 1000 / connected, 2
        ) if connected else None,
        "web_cpu_ms_per_s_held": round(hold_cpu.get("web (uvicorn)", 0) * 1000 / IDLE_HOLD_S, 1),
        "connect_errors": dict(failures.most_common(5)),
    }  # fmt: skip


def add_server_timings(results: list[CallResult], using: str = "default") -> None:
    """Fill in when the web process stored the message, when a worker claimed the reply and
    when the worker saw the first token, from the rows the app wrote (same host, same clock)."""
    from django.db import connections

    from conversations.models import Turn

    by_reply = {r.reply_id: r for r in results if r.reply_id and r.sent_at}
    rows = (
        Turn.objects.using(using)
        .filter(pk__in=list(by_reply))
        .values("pk", "claimed_at", "first_token_ms", "reply_to__created_at")
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
# The process kinds whose CPU is "ours" (per reply, in the main table), by counter group.
KINDS = {
    "web": "web (uvicorn)",
    "worker": "Celery workers",
    "redis": "redis-server",
    "postgres": "postgres",
}
# A Postgres backend's title: "postgres: [15/main: ]<user> <database> <client> <state>".
PG_BACKEND = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:[\d.:a-fA-F]+\(\d+\)|\[local\])")


@dataclass
class Counters:
    cpu_s: dict[str, float]
    redis_calls: dict[str, int]
    pg: dict[str, int]
    at: float


def read_counters(stack: Stack) -> Counters:
    import psutil

    cpu: dict[str, float] = {}

    def add(group: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            cpu[group] = cpu.get(group, 0.0) + times.user + times.system

    add("fake model server", stack.fake.process.pid)
    for pid in stack.web.pids() if stack.web else []:
        add(KINDS["web"], pid)
    for worker in stack.workers:
        for pid in worker.pids():
            add(KINDS["worker"], pid)
    add("bench client", os.getpid())
    machine = psutil.cpu_times()
    cpu[MACHINE] = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
    if stack.redis_pid:
        add(KINDS["redis"], stack.redis_pid)
    if stack.db_name:
        # Read-only: the server's CPU time. The backends of other databases (other people's
        # tests and benches, this run's other stack) are left out; the server's own processes
        # (WAL writer, checkpointer...) count.
        for proc in psutil.process_iter(["name", "cmdline"]):
            if not (proc.info["name"] or "").startswith("postgres"):
                continue
            match = PG_BACKEND.match(" ".join(proc.info["cmdline"] or []))
            if match is None or match.group(1) == stack.db_name:
                add(KINDS["postgres"], proc.pid)
    redis_calls: dict[str, int] = {}
    pg: dict[str, int] = {}
    with contextlib.suppress(Exception):
        import redis

        stats = redis.Redis.from_url(stack.redis_url).info("commandstats")
        redis_calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    if stack.db_name:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = %s",
                    (stack.db_name,),
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
        targets = [(f"web-{pid}", pid) for pid in stack.web_pids()]
        targets += [(f"{w.name.removeprefix(stack.name + '-')}-{w.process.pid}", w.process.pid)
                    for w in stack.workers]  # fmt: skip
        for name, pid in targets:
            path = out_dir / f"profile-{stack.name}-{name}.txt"
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


PROJECT_PACKAGES = ("support_bot", "bot", "conversations", "knowledge", "inbox", "studio")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short_path(path: str) -> str:
    """site-packages/… and the checkout's own files, without the folders before them."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/lib/python3" in path:
        return "stdlib/" + path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    for package in PROJECT_PACKAGES:
        marker = f"/{package}/"
        if marker in path:
            return package + "/" + path.rsplit(marker, 1)[1]
    return path


def frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    return f"{match.group('func')} ({short_path(match.group('file'))})"


def summarise_profiles(paths: list[Path], top: int = 15) -> dict[str, dict[str, Any]]:
    """Per process kind (web, worker): samples, the functions with the most self time (where
    the CPU is spent) and the project's own functions with the most total time (what spends
    it). py-spy's raw lines: "thread (tid): name;frame;frame… count", with --gil only samples
    of the thread holding the GIL, i.e. Python CPU time."""
    kinds: dict[str, dict[str, Tally[str]]] = {}
    for path in paths:
        kind = "web" if "-web-" in path.name else "worker"
        tallies = kinds.setdefault(kind, {"self": Tally(), "ours": Tally(), "total": Tally()})
        for line in path.read_text(errors="replace").splitlines():
            stack_text, _, count_text = line.rpartition(" ")
            if not stack_text or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame_name(f) for f in stack_text.split(";")[1:]]  # [0]: the thread
            if not frames:
                continue
            tallies["total"]["samples"] += count
            tallies["self"][frames[-1]] += count
            for name in set(frames):
                if name.split(" (", 1)[-1].startswith(PROJECT_PACKAGES):
                    tallies["ours"][name] += count
    result: dict[str, dict[str, Any]] = {}
    for kind, tallies in kinds.items():
        samples = tallies["total"]["samples"] or 1
        result[kind] = {
            "samples": tallies["total"]["samples"],
            "self": [
                (name, round(100 * n / samples, 1)) for name, n in tallies["self"].most_common(top)
            ],
            "project_total": [
                (name, round(100 * n / samples, 1)) for name, n in tallies["ours"].most_common(10)
            ],
        }  # fmt: skip
    return result


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


@dataclass
class RoundSummary:
    round: str  # e.g. "N=50" or "open 1000@20/s×30s"
    kind: str  # "burst" | "open"
    n: int  # burst: customers at once; open: customers connected
    code: str  # the stack: "ours", "base" or "embedded"
    code_label: str
    messages: int
    direct_ttft: tuple[float | None, float | None]
    bot_ttft: tuple[float | None, float | None]
    overhead: tuple[float | None, float | None]  # ours − floor, p50 and p99
    ratio_p99: float | None  # ours p99 / floor p99
    direct_total_p50: float | None
    bot_total: tuple[float | None, float | None]
    frames_per_reply: float | None
    replies_ok: int
    lost: int  # replies missing expected text
    doubled: int  # replies with text beyond the expected (repeated)
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
    skipped: int  # open loop: due while every customer had a reply in flight
    repeats: int  # open loop: messages from a customer who had written before in the round
    late_p99_ms: float | None  # open loop: how late the client sent, p99
    cpu_ms_per_reply: dict[str, float | None]  # web, worker, redis, postgres, ours, client, fake
    errors: list[str]
    # Support Bot time, split by where it went (p50, p99 in ms).
    breakdown: dict[str, tuple[float | None, float | None]]
    resources: dict[str, Any]
    targets: list[str] = field(default_factory=list)  # "met"/"NOT met" of this row's targets
    # Under --budget-rpm/--budget-tpm (None otherwise): what the fake model answered during the
    # Support Bot round (its 429s are what the app's budget must prevent), the replies whose
    # text started more than OVERTAKE_TOLERANCE_S after that of a reply to a later message and
    # the worst such overtaking, and the "one moment" lines (reply.waiting) sent.
    model_requests: int | None = None
    model_429s: int | None = None
    out_of_order: int | None = None
    worst_overtake_ms: float | None = None
    waiting_lines: int | None = None


def cpu_per_reply(
    resources: dict[str, Any], replies: int, direct_replies: int = 0
) -> dict[str, float | None]:
    """CPU ms a reply by process kind; "floor" is the bench client's while it made the floor's
    direct `openai` calls, per call: what streaming the same reply costs the official client
    alone, the baseline "ours" is a multiple of."""
    cpu = resources.get("cpu_s", {})
    if not replies or not cpu:
        return dict.fromkeys([*KINDS, "ours", "floor", "client", "fake"])
    per = {kind: cpu.get(group, 0.0) * 1000 / replies for kind, group in KINDS.items()}
    per["ours"] = sum(per.values())
    per["client"] = cpu.get("bench client", 0.0) * 1000 / replies
    per["fake"] = cpu.get("fake model server", 0.0) * 1000 / replies
    floor_cpu = resources.get("direct_round", {}).get("cpu_s", {}).get("bench client")
    floor = round(floor_cpu * 1000 / direct_replies, 1) if floor_cpu and direct_replies else None
    return {**{k: round(v, 1) for k, v in per.items()}, "floor": floor}


def summarise(
    spec: RoundSpec, stack: Stack, direct: list[CallResult], bot: list[CallResult],
    resources: dict[str, Any],
) -> RoundSummary:  # fmt: skip
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
        # Not claimed_at: the worker's lease heartbeat moves it forward while the reply streams.
        "stored → reply.start at client": stage(lambda r: _sub(r.start_frame_ms, r.stored_ms)),
        "reply.start → first token in worker": stage(
            lambda r: _sub(r.worker_first_token_ms, r.start_frame_ms)
        ),
        "first token in worker → client": stage(lambda r: _sub(r.ttft_ms, r.worker_first_token_ms)),
    }
    skipped = [r for r in bot if r.error.startswith("skipped")]
    errors = sorted({r.error for r in [*direct, *bot] if r.error})
    model = resources.get("model")
    out_of_order, worst_overtake_ms = order_of_starts(bot) if model else (None, None)
    return RoundSummary(
        round=spec.label, kind=spec.kind, n=spec.n, code=stack.name, code_label=stack.label,
        messages=len(bot) - len(skipped),
        direct_ttft=direct_ttft,
        bot_ttft=bot_ttft,
        overhead=(_sub(bot_ttft[0], direct_ttft[0]), _sub(bot_ttft[1], direct_ttft[1])),
        ratio_p99=_ratio(bot_ttft[1], direct_ttft[1]),
        direct_total_p50=percentile([r.total_ms for r in ok_direct if r.total_ms], 50),
        bot_total=p50_p99([r.total_ms for r in ok_bot if r.total_ms is not None]),
        frames_per_reply=statistics.mean(r.frames for r in ok_bot) if ok_bot else None,
        replies_ok=len(ok_bot),
        lost=sum(1 for r in finished if r.lost_tokens or r.lost_chars),
        doubled=sum(1 for r in finished if r.extra_chars),
        lost_tokens=sum(r.lost_tokens for r in finished),
        lost_chars=sum(r.lost_chars for r in finished),
        extra_chars=sum(r.extra_chars for r in finished),
        dup_frames=sum(r.dup_frames for r in finished),
        missing_seqs=sum(r.missing_seqs for r in finished),
        restarts=sum(r.restarts for r in finished),
        resumes=sum(r.resumes for r in bot),
        text_mismatches=sum(1 for r in finished if not (r.matches_expected and r.matches_done)),
        failed=sum(1 for r in bot if not r.ok) - len(skipped),
        direct_failed=sum(1 for r in direct if not r.ok),
        skipped=len(skipped),
        repeats=sum(1 for r in bot if r.repeat),
        late_p99_ms=percentile([r.late_ms for r in bot if r.late_ms is not None], 99),
        cpu_ms_per_reply=cpu_per_reply(resources, len(ok_bot), len(ok_direct)),
        errors=errors[:10],
        breakdown=breakdown,
        resources=resources,
        model_requests=model["requests"] if model else None,
        model_429s=model["429s"] if model else None,
        out_of_order=out_of_order,
        worst_overtake_ms=worst_overtake_ms,
        waiting_lines=sum(r.waiting_lines for r in bot) if model else None,
    )  # fmt: skip


def order_of_starts(bot: list[CallResult]) -> tuple[int, float]:
    """Replies whose text started more than OVERTAKE_TOLERANCE_S after that of a reply to a
    message stored after theirs, and the worst such lag in ms (0 when every reply started no
    later than those after it). Stored: the customer's turn's created_at, the app's "asked"
    (a burst's messages are all sent within milliseconds, so their sending has no order; nor
    do reply ids, taken at the end of the message's transaction, seconds later under load)."""
    started = sorted(
        (r.sent_at + r.stored_ms / 1000 if r.sent_at and r.stored_ms is not None else math.inf,
         r.reply_id, r.first_delta_at)
        for r in bot
        if r.reply_id and r.first_delta_at
    )  # fmt: skip
    out_of_order, worst, earliest_later = 0, 0.0, math.inf
    for _stored_at, _reply_id, at in reversed(started):
        lag = at - earliest_later
        worst = max(worst, lag)
        if lag > OVERTAKE_TOLERANCE_S:
            out_of_order += 1
        earliest_later = min(earliest_later, at)
    return out_of_order, worst * 1000


@dataclass
class TargetResult:
    target: str  # a TARGETS key
    code: str  # the stack
    met: bool | None  # None: not measured in this run
    measured: str


def evaluate_targets(
    rows: list[RoundSummary], idle: dict[str, dict[str, Any]], stacks: list[Stack]
) -> list[TargetResult]:
    """Each of issue 15's targets, per production-path stack ("embedded" only counts for the
    embedded one), from the rounds that measure it; marks the rows too."""
    results: list[TargetResult] = []

    def row(code: str, kind: str, n: int, rate: float | None = None) -> RoundSummary | None:
        for r in rows:
            same = r.code == code and r.kind == kind and r.n == n
            if same and (rate is None or f"@{rate:g}/s" in r.round):
                return r
        return None

    def mark(target: str, code: str, r: RoundSummary | None, met: bool | None, text: str) -> None:
        results.append(TargetResult(target, code, met, text))
        if r is not None and met is not None:
            r.targets.append(f"{target} {'met' if met else 'NOT met'}")

    for stack in stacks:
        if stack.name == "embedded":
            continue
        code = stack.name
        r = row(code, "serial", 1) or row(code, "burst", 1)
        if r and r.overhead[0] is not None:
            mark("one", code, r, r.overhead[0] <= 25, f"{r.overhead[0]:+.0f} ms p50")
        else:
            mark("one", code, None, None, "not run")
        for key, n, bound, extra in (("fifty", 50, 1.5, ""), ("two_hundred", 200, 3.0, "resumes")):
            r = row(code, "burst", n)
            if r and r.ratio_p99 is not None:
                met = r.ratio_p99 <= bound and (not extra or r.resumes == 0)
                text = f"{r.ratio_p99:.2f}× p99" + (f", {r.resumes} resumes" if extra else "")
                mark(key, code, r, met, text)
            else:
                mark(key, code, None, None, "not run")
        r = row(code, "open", 1000, 20)
        if r and r.ratio_p99 is not None:
            mark("open", code, r, r.ratio_p99 <= 1.25, f"{r.ratio_p99:.2f}× p99")
        else:
            mark("open", code, None, None, "not run")
        held = idle.get(code)
        if held and held["sockets"] >= 5000:
            kb = held["kb_per_socket"]
            met = held["connected"] == held["sockets"] and kb is not None and kb <= 40
            mark("idle", code, None, met,
                 f"{held['connected']}/{held['sockets']} held, {kb} KB a socket")  # fmt: skip
        else:
            text = f"not run at 5,000 ({held['sockets']} sockets)" if held else "not run"
            mark("idle", code, None, None, text)
        r = row(code, "burst", 50)
        cpu = r.cpu_ms_per_reply.get("ours") if r else None
        if r and cpu is not None:
            mark("cpu", code, r, cpu <= 25, f"{cpu:.0f} ms a reply")
        else:
            mark("cpu", code, None, None, "not run")
    emb, prod = row("embedded", "burst", 50), row("ours", "burst", 50)
    if stacks[0].embedded:
        mark("embedded", "ours", None, None, "run without --embedded (with --also-embedded 50)")
    elif emb and prod and emb.bot_ttft[1] is not None and prod.bot_ttft[1]:
        ratio = emb.bot_ttft[1] / prod.bot_ttft[1]
        mark("embedded", "embedded", emb, ratio <= 2, f"{ratio:.2f}× production's p99")
    else:
        mark("embedded", "embedded", None, None, "not run")
    dirty = [r for r in rows if r.lost or r.doubled or r.failed]
    mark("clean", "all", None, not dirty,
         "; ".join(f"{r.round} {r.code}: {r.lost}/{r.doubled}/{r.failed}" for r in dirty)
         or f"{len(rows)} rounds, 0 / 0 / 0")  # fmt: skip
    return results


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pair(values: tuple[float | None, float | None]) -> str:
    return f"{fmt(values[0])} / {fmt(values[1])}"


def environment(
    opts: Options, stacks: list[Stack], load_at_start: tuple[float, ...], fd_limit: int
) -> dict[str, Any]:
    import celery
    import channels
    import channels_redis
    import django
    import openai
    import psutil
    import uvicorn

    return {
        "path": stacks[0].path,
        "stacks": {
            s.name: {
                "label": s.label,
                "root": str(s.root),
                "commit": s.commit,
                "path": s.path,
                "database": s.db_name or s.db_url,
                "redis_prefix": s.env["REDIS_KEY_PREFIX"],
                "code_check": s.code_check,
            }
            for s in stacks
        },  # fmt: skip
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "fd_limit": fd_limit,
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
            "full_grounded": opts.full_grounded,
        },
        "seed": opts.seed,
        "extra_env": opts.extra_env,
        "base_extra_env": opts.base_extra_env,
        "worker_nice": opts.worker_nice,
        "budget": {"requests_per_min": opts.budget_rpm, "tokens_per_min": opts.budget_tpm},
        "logs": str(stacks[0].log_dir),
    }


def budget_text(budget: dict[str, int]) -> str:
    """The run's --budget-rpm/--budget-tpm, e.g. "12 requests/min" ('' without a budget)."""
    return ", ".join(
        f"{budget[k]} {k.removesuffix('_per_min')}/min"
        for k in ("requests_per_min", "tokens_per_min")
        if budget.get(k)
    )


def print_report(
    env: dict[str, Any], rows: list[RoundSummary], idle: dict[str, dict[str, Any]],
    targets: list[TargetResult], profiles: dict[str, dict[str, dict[str, Any]]],
) -> None:  # fmt: skip
    print()
    print(
        f"Environment: {env['cores']} cores, {env['memory_gib']} GiB, Python {env['python']}, "
        f"load average at start {env['load_average_at_start'][0]:.2f}; path: {env['path']}"
    )
    print(
        f"  {env['web_processes']} web processes (uvicorn, uvloop/httptools), {env['workers']} "
        f"Celery workers × {env['worker_threads']} threads; fake model: TTFT "
        f"{env['fake_model']['ttft_ms']} ms, {env['fake_model']['tokens_per_s']:g} tokens/s, "
        + (
            f"{env['fake_model']['reply_tokens']} tokens a reply"
            if env["fake_model"].get("full_grounded")
            else "grounded replies of one sentence a passage"
        )
        + (f"; extra env {env['extra_env']}" if env["extra_env"] else "")
    )
    for name, stack in env["stacks"].items():
        print(f"  {name}: {stack['label']}, {stack['path']}; {stack['code_check']}")
    limits = budget_text(env.get("budget") or {})
    if limits:
        print(
            f"  the model's budget: {limits}, enforced by the fake model (429s) during every "
            "Support Bot round and given to the app; the floor runs without it"
        )
    print()
    cpu_kinds = [*KINDS, "ours", "floor"]
    budgeted = any(row.model_requests is not None for row in rows)
    header = (
        f"{'round':<22}{'code':<10}{'floor p50/p99':<16}{'ours p50/p99':<16}{'p99 ×':<7}"
        f"{'p50 Δ':<8}{'lost/dbl/fail':<15}{'resumes':<9}"
        + (f"{'429/req':<9}{'overtaken':<13}{'waiting':<8}" if budgeted else "")
        + "".join(f"{k:>9}" for k in cpu_kinds)
        + "   target"
    )
    print(
        "TTFT in ms; CPU in ms per reply by process kind (ours = web + worker + redis + postgres;"
        " floor = the direct openai call's own, in the bench client)"
    )
    if budgeted:
        print(
            f"Under the budget: 429/req = the model's 429s / requests in the round (must be 0); "
            f"overtaken = replies whose text started > {OVERTAKE_TOLERANCE_S:g} s after that of "
            "a reply to a later message (worst, s); waiting = 'one moment' lines (reply.waiting)"
        )
    print(header)
    print("-" * (len(header) + 12))
    for row in rows:
        ratio = "–" if row.ratio_p99 is None else f"{row.ratio_p99:.2f}"
        diff = "–" if row.overhead[0] is None else f"{row.overhead[0]:+.0f}"
        cpu = "".join(f"{fmt(row.cpu_ms_per_reply.get(k)):>9}" for k in cpu_kinds)
        model = ""
        if budgeted:
            worst = None if row.worst_overtake_ms is None else row.worst_overtake_ms / 1000
            model = (
                f"{f'{fmt(row.model_429s)}/{fmt(row.model_requests)}':<9}"
                f"{f'{fmt(row.out_of_order)} ({fmt(worst, 1)})':<13}{fmt(row.waiting_lines):<8}"
            )
        print(
            f"{row.round:<22}{row.code:<10}{pair(row.direct_ttft):<16}{pair(row.bot_ttft):<16}"
            f"{ratio:<7}{diff:<8}{f'{row.lost}/{row.doubled}/{row.failed}':<15}"
            f"{row.resumes:<9}{model}{cpu}   {', '.join(row.targets)}"
        )
    codes = list(dict.fromkeys(r.code for r in rows))
    if "base" in codes:
        print()
        print("ours ÷ base, same round (below 1: ours is faster / cheaper):")
        for row in rows:
            if row.code != "ours":
                continue
            base = next((r for r in rows if r.code == "base" and r.round == row.round), None)
            if base is None:
                continue
            p99 = _ratio(row.bot_ttft[1], base.bot_ttft[1])
            cpu_ratio = _ratio(row.cpu_ms_per_reply.get("ours"), base.cpu_ms_per_reply.get("ours"))
            by_kind = ", ".join(
                f"{k} {fmt(_ratio(row.cpu_ms_per_reply.get(k), base.cpu_ms_per_reply.get(k)), 2)}"
                for k in KINDS
            )
            print(
                f"  {row.round:<22} TTFT p99 {fmt(p99, 2)}×, "
                f"CPU a reply {fmt(cpu_ratio, 2)}× ({by_kind})"
            )
    if idle:
        print()
        print(f"Idle sockets (held {IDLE_HOLD_S:g} s; web RSS summed over uvicorn's processes):")
        for code, held in idle.items():
            rss = held["web_rss_mib"]
            print(
                f"  {code}: {held['connected']}/{held['sockets']} connected in "
                f"{held['connect_s']:.1f} s; web RSS {rss['before']} → {rss['held']} MiB "
                f"({fmt(held['kb_per_socket'], 1)} KB a socket), {rss['after_close']} MiB after "
                f"closing; web CPU {fmt(held['web_cpu_ms_per_connect'], 2)} ms a connect, "
                f"{held['web_cpu_ms_per_s_held']} ms/s while held"
                + (f"; connect errors {held['connect_errors']}" if held["connect_errors"] else "")
            )
    print()
    print("Targets (issue 15):")
    for t in targets:
        status = {True: "met", False: "NOT met", None: "–"}[t.met]
        print(f"  {status:<8} {TARGETS[t.target]} [{t.code}]: {t.measured}")
    print()
    for row in rows:
        notes = []
        if row.missing_seqs or row.text_mismatches or row.restarts or row.extra_chars:
            notes.append(
                f"missing seqs {row.missing_seqs}, text mismatches {row.text_mismatches}, "
                f"restarts {row.restarts}, lost tokens {row.lost_tokens}, lost chars "
                f"{row.lost_chars}, extra chars {row.extra_chars}"
            )
        if row.dup_frames:
            notes.append(f"duplicate frames {row.dup_frames} (replays after a resume, dropped)")
        if row.kind == "open":
            notes.append(
                f"{row.messages} messages ({row.repeats} from a customer's second message), "
                f"client late p99 {fmt(row.late_p99_ms)} ms"
                + (f", {row.skipped} skipped (every customer busy)" if row.skipped else "")
            )
        if row.model_requests is not None:
            notes.append(
                f"under a budget of {limits}: the model got {row.model_requests} requests and "
                f"answered {row.model_429s} of them 429"
                + (" (must be 0)" if row.model_429s else "")
                + f"; replies started out of the order their messages came (by > "
                f"{OVERTAKE_TOLERANCE_S:g} s): {row.out_of_order}, worst overtaking "
                f"{fmt(row.worst_overtake_ms)} ms; 'one moment' lines sent: {row.waiting_lines}"
            )
        if row.direct_failed:
            notes.append(f"floor failed {row.direct_failed}")
        if row.errors:
            notes.append("errors: " + " | ".join(row.errors[:3]))
        if notes:
            print(f"  {row.round} {row.code}: " + "; ".join(notes))
    print()
    print("Where Support Bot's time goes, p50 / p99 (ms):")
    stages = list(rows[0].breakdown) if rows else []
    width = max((len(s) for s in stages), default=0) + 2
    print(f"{'round':<22}{'code':<10}" + "".join(f"{s:<{width}}" for s in stages))
    for row in rows:
        print(
            f"{row.round:<22}{row.code:<10}"
            + "".join(f"{pair(row.breakdown[s]):<{width}}" for s in stages)
        )
    print()
    print("Resources during each Support Bot round (CPU seconds; Redis commands; Postgres):")
    for row in rows:
        res = row.resources
        if not res:
            continue
        frames = row.frames_per_reply or 0
        total_frames = max(1.0, row.messages * (frames + 2))  # deltas + start + done
        redis_total = sum(res["redis_calls"].values())
        top = ", ".join(f"{k} {v}" for k, v in list(res["redis_calls"].items())[:6])
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_s"].items())
        pg = res["postgres"]
        replies = max(1, row.messages)
        pg_text = (
            f"; Postgres: {pg.get('sessions', 0) / replies:.1f} new sessions and "
            f"{pg.get('transactions', 0) / replies:.1f} transactions a reply"
            if pg
            else ""
        )
        print(f"  {row.round} {row.code}: wall {res['wall_s']:.1f} s; CPU: {cpu}")
        floor = res.get("direct_round")
        if floor:
            direct_cpu = ", ".join(f"{k} {v:.2f}" for k, v in floor["cpu_s"].items() if v >= 0.01)
            print(f"        (floor: wall {floor['wall_s']:.1f} s; CPU: {direct_cpu})")
        print(
            f"        Redis: {redis_total} commands = {redis_total / total_frames:.1f} a frame "
            f"({top}){pg_text}"
        )
    for code, by_process in profiles.items():
        for kind, prof in by_process.items():
            print()
            print(
                f"Profile, {code} {kind} processes ({prof['samples']} samples at 200 Hz of the "
                "thread holding the GIL): self time, % of samples"
            )
            for name, share in prof["self"]:
                print(f"  {share:5.1f}%  {name}")
            if prof["project_total"]:
                print("  the project's own functions, total time (with what they call):")
                for name, share in prof["project_total"]:
                    print(f"  {share:5.1f}%  {name}")


def save_json(
    env: dict[str, Any], rows: list[RoundSummary], idle: dict[str, Any],
    targets: list[TargetResult], profiles: dict[str, Any], raw: dict[str, Any],
    path: Path | None = None,
) -> Path:  # fmt: skip
    BENCH_DIR.mkdir(exist_ok=True)
    path = path or BENCH_DIR / f"load-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "targets": [{**asdict(t), "text": TARGETS[t.target]} for t in targets],
                "environment": env,
                "rounds": [asdict(r) for r in rows],
                "idle": idle,
                "profiles": profiles,
                "raw": raw,
            },
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


@dataclass
class RoundPlan:
    """What every stack of one round sends: the floor's prompts are the customers' prompts."""

    spec: RoundSpec
    index: int
    prompts: list[list[dict[str, str]]]
    due: list[float]  # open loop: arrival times


def plan_round(spec: RoundSpec, index: int, system_prompt: str, seed: int) -> RoundPlan:
    due: list[float] = []
    if spec.kind == "burst":
        count = spec.n
    elif spec.kind == "serial":
        count = spec.questions
    else:
        due = poisson_arrivals(spec.rate, spec.seconds, seed + index)
        count = len(due)
    # Each round asks questions of its own, the warm-up (index -1) too: a question asked again
    # within 30 s finds its vector shared in Redis (knowledge/search/ahead.py) and skips the
    # embedding, so a repeated burst, or one of the warm-up's size, measured a cheaper reply.
    name = f"{spec.key}#{index + 1}" if index >= 0 else f"warm-up-{spec.key}"
    prompts = [grounded_messages(system_prompt, question(name, i)) for i in range(count)]
    return RoundPlan(spec, index, prompts, due)


def run_floor(
    plan: RoundPlan, stack: Stack, opts: Options
) -> tuple[list[CallResult], dict[str, Any]]:
    before = read_counters(stack)
    shared = opts.floor_processes > 1 and len(plan.prompts) > 1 and plan.spec.kind != "serial"
    children_cpu_s = 0.0
    if shared:
        direct, children_cpu_s = floor_in_processes(stack.fake_url, plan, opts)
    elif plan.spec.kind == "burst":
        direct = run_async(direct_round(stack.fake_url, plan.prompts, opts))
    elif plan.spec.kind == "serial":
        direct = run_async(direct_serial(stack.fake_url, plan.prompts, opts))
    else:
        direct = run_async(direct_open_loop(stack.fake_url, plan.prompts, plan.due, opts))
    resources = counter_delta(before, read_counters(stack))
    if children_cpu_s:
        # The floor's processes have ended, so the machine's total counted them as the rest.
        cpu = resources["cpu_s"]
        cpu["bench client"] = round(cpu.get("bench client", 0.0) + children_cpu_s, 3)
        cpu["rest of machine"] = round(max(0.0, cpu["rest of machine"] - children_cpu_s), 3)
    ok = sum(r.ok for r in direct)
    where = f" in {opts.floor_processes} processes" if shared else ""
    print(f"    floor (direct calls{where}): {ok}/{len(direct)} ok", flush=True)
    return direct, resources


FLOOR_START_S = 2.5  # for the floor's processes to import the openai client before start_at


def floor_in_processes(
    fake_url: str, plan: RoundPlan, opts: Options
) -> tuple[list[CallResult], float]:
    """The round's direct calls shared round-robin among opts.floor_processes processes
    (bench/floor_client.py), all starting at one wall-clock moment: a burst's calls at once,
    an open round's at their arrival times. Returns the results in order and the CPU seconds
    the processes spent on the calls."""
    start_at = time.time() + FLOOR_START_S
    shares: list[list[dict[str, Any]]] = [[] for _ in range(opts.floor_processes)]
    for i, messages in enumerate(plan.prompts):
        shares[i % len(shares)].append({
            "index": i,
            "messages": messages,
            "tokens": expected_tokens(messages, opts),
            "due_s": plan.due[i] if plan.due else None,
        })  # fmt: skip
    children = []
    for calls in shares:
        if not calls:
            continue
        with tempfile.TemporaryFile("w+") as share:  # the child's stdin: no pipe to feed
            json.dump({"fake_url": fake_url, "start_at": start_at, "timeout_s": opts.timeout_s,
                       "calls": calls}, share)  # fmt: skip
            share.seek(0)
            children.append(subprocess.Popen(
                [PYTHON, "-m", "bench.floor_client"], cwd=ROOT, stdin=share,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
    limit = FLOOR_START_S + max(plan.due, default=0.0) + opts.timeout_s + 30
    results: list[CallResult] = []
    cpu_s = 0.0
    try:
        for child in children:
            out, err = child.communicate(timeout=limit)
            if child.returncode != 0:
                raise BenchError(f"a floor process failed ({child.returncode}): {err[-2000:]}")
            report = json.loads(out)
            results.extend(CallResult(**r) for r in report["results"])
            cpu_s += float(report["cpu_s"])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return sorted(results, key=lambda r: r.index), cpu_s


def fake_control(stack: Stack, action: str, body: dict[str, Any] | None = None) -> Any:
    """The fake model server's control API (tests/fake_llm.py): GET, or POST with a body."""
    import httpx2

    url = f"{stack.fake_url}/_control/{action}"
    try:
        if body is None:
            response = httpx2.get(url, timeout=10)
        else:
            response = httpx2.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.json()
    except (httpx2.HTTPError, ValueError) as exc:
        raise BenchError(f"the fake model's /_control/{action}: {exc}") from exc


def arm_budget(stack: Stack, opts: Options) -> None:
    """Right before the stack's customers send: the fake model (shared by every stack) enforces
    the budget from a full bucket and its record of requests starts empty, and this stack's
    shared budget in Redis (under its own key prefix) starts full too, whatever the round or
    the stack before took from it."""
    import redis

    fake_control(stack, "reset", {})
    fake_control(
        stack, "budget", {"requests_per_min": opts.budget_rpm, "tokens_per_min": opts.budget_tpm}
    )
    client = redis.Redis.from_url(stack.redis_url)
    try:
        pattern = f"{stack.env['REDIS_KEY_PREFIX']}model-budget:*"
        for found in client.scan_iter(match=pattern, count=1000):
            client.delete(found)
    finally:
        client.close()


def budget_outcome(stack: Stack) -> dict[str, int]:
    """What the fake model answered during the stack's round."""
    requests = fake_control(stack, "requests")
    return {
        "requests": len(requests),
        "429s": sum(1 for r in requests if r.get("outcome") == "429"),
    }


def disarm_budget(stack: Stack) -> None:
    """The budget off again: the next floor (direct calls) is not limited. Best effort: it runs
    on the way out of a round that failed or was interrupted too."""
    with contextlib.suppress(BenchError):
        fake_control(stack, "budget", {"requests_per_min": 0, "tokens_per_min": 0})


def run_stack(
    plan: RoundPlan, stack: Stack, opts: Options, profile_dir: Path | None = None
) -> tuple[list[CallResult], dict[str, Any]]:
    spec = plan.spec
    if not stack.replies_as_floor:
        opts = replace(opts, replies_as_floor=False)
    seats = create_seats(len(plan.prompts) if spec.kind == "serial" else spec.n, stack.db_alias)
    profilers = Profilers()
    counters: list[Counters] = []
    model: dict[str, int] = {}

    def before_send() -> None:
        if opts.budgeted:
            arm_budget(stack, opts)
        if profile_dir is not None:
            profilers.start(stack, profile_dir)
        counters.append(read_counters(stack))

    try:
        if spec.kind == "burst":
            bot = run_async(bot_round(stack.web_url, seats, plan.prompts, opts, before_send))
        elif spec.kind == "serial":
            bot = []
            for i, (seat, prompt) in enumerate(zip(seats, plan.prompts, strict=True)):
                if i:
                    time.sleep(SERIAL_PAUSE_S)
                first = before_send if i == 0 else None
                (result,) = run_async(bot_round(stack.web_url, [seat], [prompt], opts, first))
                result.index = i
                bot.append(result)
        else:
            seed = opts.seed + 1000 + plan.index
            bot = run_async(
                bot_open_loop(stack.web_url, seats, plan.prompts, plan.due, opts, seed, before_send)
            )
        counters.append(read_counters(stack))
        if opts.budgeted:
            model = budget_outcome(stack)
    finally:
        profiles = profilers.stop()
        if opts.budgeted:
            disarm_budget(stack)
    add_server_timings(bot, stack.db_alias)
    resources = counter_delta(counters[0], counters[1]) if len(counters) == 2 else {}
    if model:
        resources["model"] = model
    if profiles:
        resources["profiles"] = [str(p) for p in profiles]
    ok = sum(r.ok for r in bot)
    print(f"    {stack.label}: {ok}/{len(bot)} replies ok", flush=True)
    time.sleep(1.0)  # let the workers finish storing before the next round
    return bot, resources


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress
    started = datetime.now()
    run_started = time.monotonic()
    load_at_start = os.getloadavg()
    log_dir = BENCH_DIR / f"logs-{started.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    bursts = [RoundSpec("burst", n) for n in opts.n_values]
    serial = [RoundSpec("serial", 1, questions=opts.one_at_a_time)] if opts.one_at_a_time else []
    specs = serial + bursts + opts.open_rounds
    # Sockets held at once (an open round's C, the idle K), plus headroom for everything else.
    fd_limit = raise_fd_limit(max([opts.idle, *(s.n for s in specs)], default=0) + 4096)
    print(f"Support Bot load benchmark ({'embedded' if opts.embedded else 'production'} path)")
    print(f"Starting the fake model, database, web and workers (logs in {log_dir})…")
    rows: list[RoundSummary] = []
    raw: dict[str, Any] = {}
    idle: dict[str, dict[str, Any]] = {}
    profile_paths: dict[str, list[Path]] = {}
    with bounded(opts.max_run_s), contextlib.ExitStack() as cleanup:
        try:
            stacks = start_stacks(opts, cleanup, log_dir)
            from django.conf import settings

            system_prompt = settings.SYSTEM_PROMPT.format(company=settings.COMPANY_NAME)
            print("Ready.")

            def takes(stack: Stack, spec: RoundSpec) -> bool:
                return stack.name != "embedded" or (
                    spec.kind == "burst" and spec.n in opts.also_embedded
                )

            if opts.warmup and specs:
                # The largest burst each stack takes (so every worker thread and web process
                # has its connections open), or 50 with open-loop rounds only; and never fewer
                # than four customers a process, so that one-customer rounds don't reach a web
                # process or worker for the first time (docs/performance.md).
                def warm_n(stack: Stack) -> int:
                    ns = [s.n for s in bursts if takes(stack, s)]
                    largest = max(ns, default=min([50, *(s.n for s in specs)]))
                    return max(largest, 4 * (opts.web_processes + opts.workers))

                warm = max(warm_n(stack) for stack in stacks)
                print(f"Warm-up, N={warm} (not reported):")
                plan = plan_round(RoundSpec("burst", warm), -1, system_prompt, opts.seed)
                run_floor(plan, stacks[0], opts)
                for stack in stacks:
                    n = warm_n(stack)
                    part = RoundPlan(RoundSpec("burst", n), -1, plan.prompts[:n], [])
                    bot, _ = run_stack(part, stack, opts)
                    raw[f"warmup-{stack.name}"] = [asdict(r) for r in bot]
            largest = max((s.n for s in bursts), default=None)
            print("Rounds:")
            for index, spec in enumerate(specs):
                print(f"  {spec.label}: preparing prompts…", end="", flush=True)
                t0 = time.monotonic()
                plan = plan_round(spec, index, system_prompt, opts.seed)
                print(f" {len(plan.prompts)} in {time.monotonic() - t0:.1f} s")
                direct, floor_resources = run_floor(plan, stacks[0], opts)
                time.sleep(0.5)
                taking = [s for s in stacks if takes(s, spec)]
                # Fair to both versions: the order alternates from round to round.
                order = taking if index % 2 == 0 else taking[::-1]
                raw[spec.key] = {"direct": [asdict(r) for r in direct]}
                for stack in order:
                    profile = opts.profile and spec.kind == "burst" and spec.n == largest
                    bot, resources = run_stack(plan, stack, opts, log_dir if profile else None)
                    resources["direct_round"] = floor_resources
                    profile_paths.setdefault(stack.name, []).extend(
                        Path(p) for p in resources.get("profiles", [])
                    )
                    rows.append(summarise(spec, stack, direct, bot, resources))
                    raw[spec.key][stack.name] = [asdict(r) for r in bot]
            order_of = {s.name: i for i, s in enumerate(stacks)}
            rows.sort(key=lambda r: (specs.index(next(s for s in specs if s.label == r.round)),
                                     order_of[r.code]))  # fmt: skip
            if opts.idle:
                print(f"Idle sockets: {opts.idle}…")
                for stack in stacks:
                    if stack.name == "embedded":
                        continue
                    seats = create_seats(opts.idle, stack.db_alias)
                    idle[stack.name] = run_async(idle_round(stack, seats, opts))
                    held = idle[stack.name]
                    print(f"    {stack.label}: {held['connected']}/{held['sockets']} held, "
                          f"{fmt(held['kb_per_socket'], 1)} KB a socket")  # fmt: skip
            env = environment(opts, stacks, load_at_start, fd_limit)
        except BenchError as exc:
            print(f"\nBenchmark stopped: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print(f"\nInterrupted ({exc or 'Ctrl-C'}); stopping everything…", file=sys.stderr)
            return 130
        finally:
            print("Stopping the processes…", flush=True)
    targets = evaluate_targets(rows, idle, stacks)
    profiles = {code: summarise_profiles(paths) for code, paths in profile_paths.items() if paths}
    print_report(env, rows, idle, targets, profiles)
    path = save_json(env, rows, idle, targets, profiles, raw, opts.json_path)
    print(f"\nResults: {path}  (run time {time.monotonic() - run_started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
