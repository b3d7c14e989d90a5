"""Fault suite: what customers mid-reply see when a process dies, Redis or Postgres goes away,
the model misbehaves or a deploy restarts the workers.

    .venv/bin/python bench/faults.py                          # every scenario, 20 customers each
    .venv/bin/python bench/faults.py --scenarios worker-kill,deploy --customers 5
    make faults

Starts the production path on its own: a throwaway Postgres cluster, its own redis-server, a
RabbitMQ vhost of its own (or its Redis as the broker), the fake model, two web processes and
two Celery workers under a supervisor that restarts whatever exits (compose's `restart:
unless-stopped`). Each scenario injects its fault while customers are mid-reply and measures
from outside, as the chat page would (static/chat/chat.js). Exits 1 when any scenario lost,
doubled or hung a reply or took longer than the recovery bound. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.load import BenchError, Child, free_port, spawn  # noqa: E402
from support_bot.processes import web_command, worker_command  # noqa: E402

RECOVERY_BOUND_S = 10.0
FAULTS_DB = "faults"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672"
BINARIES = {
    "initdb": "/usr/local/bin/initdb",
    "pg_ctl": "/usr/local/bin/pg_ctl",
    "redis-server": "/usr/bin/redis-server",
}
# What the chat page waits before it asks again (static/chat/chat.js).
STALL_WAIT_S, STALL_WAIT_MAX_S = 5.0, 30.0
GAP_WAIT_S, GAP_WAIT_MAX_S = 1.0, 8.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0
FINAL = ("done", "failed", "withdrawn")
ACTIVE = ("queued", "streaming")
# Model faults of the model scenario: shares of requests, the rest answered normally.
MODEL_FAULT_MIX = {"429": 0.3, "500": 0.2, "cut": 0.2, "hang": 0.1}
DEBUG = False  # --debug: socket errors and customer states on stderr


# --- Options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    scenarios: list[str]
    customers: int
    broker: str
    grace_s: float
    hang_after_s: float
    ttft_ms: int
    tokens_per_s: float
    reply_tokens: int
    web_processes: int
    workers: int
    worker_threads: int
    extra_env: dict[str, str]
    max_run_s: float
    json_path: Path | None
    seed: int

    def stack_options(self) -> load.Options:
        """The load benchmark's options for the helpers shared with it."""
        return load.Options(
            n_values=[], open_rounds=[], idle=0, compare=None, also_embedded=[], seed=self.seed,
            ttft_ms=self.ttft_ms, tokens_per_s=self.tokens_per_s,
            reply_tokens=self.reply_tokens, full_grounded=False,
            web_processes=self.web_processes,
            workers=self.workers, worker_threads=self.worker_threads, embedded=False,
            timeout_s=60, warmup=False, max_run_s=self.max_run_s, extra_env=self.extra_env,
            profile=False, worker_nice=0, json_path=None,
        )  # fmt: skip


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios", default="all", help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--customers", type=int, help="customers mid-reply (default 20; 3 quick)")
    parser.add_argument("--broker", choices=("amqp", "redis"), default="amqp")
    parser.add_argument(
        "--grace", type=float, default=10, help="deploy: seconds from SIGTERM to SIGKILL"
    )
    parser.add_argument(
        "--hang-after",
        type=float,
        help="a reply not finished this long after the fault ended is hung (default 60; 25 quick)",
    )
    parser.add_argument("--quick", action="store_true", help="few customers, short replies")
    parser.add_argument("--ttft-ms", type=int, default=300, help="fake model: time to first token")
    # Answers grounded in the demo articles are ~30 tokens (the fake model quotes the first
    # sentence of two passages): 6 tokens a second makes a reply take ~5 s.
    parser.add_argument("--tokens-per-s", type=float, help="fake model: token rate (6; 15 quick)")
    parser.add_argument("--reply-tokens", type=int, default=150, help="fake model: reply length")
    parser.add_argument("--web-processes", type=int, default=2, help="uvicorn --workers")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--worker-threads", type=int, default=32, help="threads per worker")
    parser.add_argument("--max-run-s", type=float, default=3600, help="bound on the whole run")
    parser.add_argument("--json", type=Path, help="where the raw results go (default .bench/)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the model-fault draws")
    parser.add_argument(
        "--debug", action="store_true", help="print socket errors and customer states (stderr)"
    )
    load.add_set_option(parser)
    args = parser.parse_args(argv)
    global DEBUG  # noqa: PLW0603 - a switch for diagnostics only
    DEBUG = args.debug
    names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    extra = load.set_option_values(parser, args.set)
    return Options(
        scenarios=names,
        customers=args.customers or (3 if args.quick else 20),
        broker=args.broker,
        grace_s=args.grace,
        hang_after_s=args.hang_after or (25 if args.quick else 60),
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s or (15 if args.quick else 6),
        reply_tokens=args.reply_tokens,
        web_processes=args.web_processes,
        workers=args.workers,
        worker_threads=args.worker_threads,
        extra_env=extra,
        max_run_s=args.max_run_s,
        json_path=args.json,
        seed=args.seed,
    )


# --- Services of its own: Postgres cluster, Redis, RabbitMQ vhost ----------------------------


def run(args: list[str], timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise BenchError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


class ThrowawayPostgres:
    """A cluster in a temporary folder on a free port, never the shared server. Postgres
    refuses to run as root, so as root it runs as the `postgres` user (or `nobody`)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pgdata"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
            if self.user is None:
                raise BenchError("running as root and there is no postgres or nobody user")
            owner = pwd.getpwnam(self.user)
            os.chown(root, owner.pw_uid, owner.pw_gid)

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else args

    def pg_ctl(self, *args: str) -> str:
        return run(self._as_owner([BINARIES["pg_ctl"], "-D", str(self.dir), *args]))

    def start(self) -> None:
        run(self._as_owner([
            BINARIES["initdb"], "-D", str(self.dir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        ]))  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c max_connections=400"
        )
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.dir / "server.log"), "-o", options)
        self.execute(f"CREATE DATABASE {FAULTS_DB}")

    def stop(self) -> None:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            self.pg_ctl("stop", "-m", "immediate", "-w")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{FAULTS_DB}"

    def execute(self, sql: str) -> Any:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else None

    def terminate_all(self) -> int:
        """Every client connection, like a failover or an administrator's kill would."""
        rows = self.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(rows[0][0])

    def restart(self) -> None:
        # -l again: without it the new server would write to (and hold open) our pipes.
        self.pg_ctl("restart", "-m", "fast", "-w", "-t", "60", "-l", str(self.dir / "server.log"))


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class OwnRedis:
    """A redis-server of the suite's own on a free port, so that it can be killed."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        self.dir = root / "redis"
        self.log_dir = log_dir
        self.port = free_port()
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, appendonly: bool, fresh: bool = False) -> None:
        if fresh:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            BINARIES["redis-server"], "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "yes" if appendonly else "no",
            "--protected-mode", "no", "--daemonize", "no",
        ]  # fmt: skip
        self.child = spawn("redis", args, load.base_env(), self.log_dir, append=True)
        self.child.wait_for("Ready to accept connections", count=1, timeout=30)

    def kill(self) -> None:
        if self.child is not None and self.child.process.poll() is None:
            self.child.process.kill()
            self.child.process.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        self.child = None


class RabbitVhost:
    """A vhost of the shared RabbitMQ for one round: its queues start empty, and go with it."""

    def __init__(self, name: str) -> None:
        self.name = name
        run(["rabbitmqctl", "-q", "add_vhost", name])
        run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"])

    @property
    def url(self) -> str:
        return f"{RABBIT_URL}/{self.name}"

    def delete(self) -> None:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            run(["rabbitmqctl", "-q", "delete_vhost", self.name])


# --- The supervisor: compose's `restart: unless-stopped` --------------------------------------


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str]
    child: Child
    restarted_at: list[float] = field(default_factory=list)


class Supervisor:
    """Starts services and, like `restart: unless-stopped`, starts again at once any whose
    process exits, until it is told to stop them."""

    def __init__(self, log_dir: Path, clock: Callable[[], float]) -> None:
        self.log_dir = log_dir
        self.clock = clock
        self.services: list[Service] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self.thread.start()

    def add(self, name: str, args: list[str], env: dict[str, str]) -> Service:
        service = Service(name, args, env, spawn(name, args, env, self.log_dir))
        with self.lock:
            self.services.append(service)
        return service

    def _watch(self) -> None:
        while not self.stopped.wait(0.05):
            with self.lock:
                for service in self.services:
                    if service.child.process.poll() is not None:
                        service.child = spawn(
                            service.name, service.args, service.env, self.log_dir, append=True
                        )
                        service.restarted_at.append(round(self.clock(), 3))

    def stop_all(self, grace_s: float = 3) -> None:
        with self.lock:
            services, self.services = self.services, []
        for service in services:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.child.process.pid, signal.SIGTERM)
        for service in services:
            service.child.stop(grace_s)

    def close(self) -> None:
        self.stop_all()
        self.stopped.set()
        self.thread.join(timeout=5)


# --- The suite's processes ------------------------------------------------------------------


@dataclass
class Suite:
    """What lives for the whole run: the fake model, Postgres, Redis, the app's environment."""

    opts: Options
    log_dir: Path
    fake: load.Child
    fake_url: str
    postgres: ThrowawayPostgres
    redis: OwnRedis
    t0: float = field(default_factory=time.monotonic)
    # One for the whole run: the bench process signs the customers' cookies with it.
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))

    def clock(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Round:
    """One scenario's app processes, customers and timeline."""

    suite: Suite
    scenario: Scenario
    env: dict[str, str]
    web_url: str
    supervisor: Supervisor
    web: Service
    workers: list[Service]
    worker_names: list[str]
    vhost: RabbitVhost | None
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    clients: list[CustomerClient] = field(default_factory=list)

    def clock(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str) -> None:
        self.events.append((round(self.clock(), 3), what))


def start_round(suite: Suite, scenario: Scenario, index: int) -> Round:
    """Fresh app processes, a fresh Redis (with the scenario's persistence) and broker."""
    opts = suite.opts
    log_dir = suite.log_dir / f"{index:02d}-{scenario.name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    suite.redis.stop()
    suite.redis.log_dir = log_dir
    suite.redis.start(appendonly=scenario.redis_appendonly, fresh=True)
    vhost = RabbitVhost(f"sb-faults-{os.getpid()}-{index}") if opts.broker == "amqp" else None
    clock_start = time.monotonic()
    supervisor = Supervisor(log_dir, lambda: time.monotonic() - clock_start)
    try:
        return _start_app(suite, scenario, log_dir, supervisor, vhost, clock_start)
    except BaseException:
        supervisor.close()
        if vhost is not None:
            vhost.delete()
        raise


def _start_app(
    suite: Suite, scenario: Scenario, log_dir: Path, supervisor: Supervisor,
    vhost: RabbitVhost | None, clock_start: float,
) -> Round:  # fmt: skip
    opts = suite.opts
    env = app_env(suite, vhost)
    port = free_port()
    web = supervisor.add(
        "web",
        [*web_command("127.0.0.1", port, processes=opts.web_processes),
         "--loop", "uvloop", "--http", "httptools"],
        {**env, "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"},
    )  # fmt: skip
    workers, names = [], []
    host = socket.gethostname()
    for i in range(opts.workers):
        name = f"faults{os.getpid()}w{i}"
        workers.append(
            supervisor.add(
                f"worker{i}", worker_command(opts.worker_threads, name=f"{name}@%h",
                                             loglevel="WARNING"), env
            )
        )  # fmt: skip
        names.append(f"{name}@{host}")
    current = Round(suite, scenario, env, f"http://127.0.0.1:{port}", supervisor, web, workers,
                    names, vhost, t0=clock_start)  # fmt: skip
    stack = load.Stack(name="faults", label="faults", root=load.ROOT, embedded=False, env=env,
                       path="", fake=suite.fake, fake_url=suite.fake_url, log_dir=log_dir,
                       db_alias="default", web_url=current.web_url, web=web.child)  # fmt: skip
    load.wait_for_web(stack, opts.stack_options())
    ping_workers(current, names, timeout=90)
    return current


def stop_round(current: Round) -> None:
    current.supervisor.close()
    if current.vhost is not None:
        current.vhost.delete()


def app_env(suite: Suite, vhost: RabbitVhost | None) -> dict[str, str]:
    services = {"DATABASE_URL": suite.postgres.url, "REDIS_URL": suite.redis.url}
    services["CELERY_BROKER_URL"] = vhost.url if vhost else suite.redis.url
    env = load.app_env(suite.opts.stack_options(), suite.fake_url, None, services)
    env["REDIS_KEY_PREFIX"] = f"sbfaults{os.getpid()}:"
    env["SECRET_KEY"] = suite.secret_key
    # As docker-compose does: the workers know when the SIGKILL after a SIGTERM comes.
    env.setdefault("WORKER_SHUTDOWN_GRACE_S", str(suite.opts.grace_s))
    return env


def ping_workers(current: Round, names: list[str], timeout: float) -> None:
    """Wait until every named worker answers a ping over the round's broker. A probe app of
    its own: the broker changes every round, the bench process's Django settings do not."""
    from celery import Celery

    probe = Celery("faults-probe", broker=current.env["CELERY_BROKER_URL"], set_as_current=False)
    if current.vhost is None:  # the Redis transport: the app's key prefix
        probe.conf.broker_transport_options = {"global_keyprefix": current.env["REDIS_KEY_PREFIX"]}
    deadline = time.monotonic() + timeout
    missing = set(names)
    try:
        while missing:
            with contextlib.suppress(Exception):  # the broker may be coming back
                for reply in probe.control.ping(destination=sorted(missing), timeout=1.0) or []:
                    missing -= set(reply)
            if missing and time.monotonic() > deadline:
                raise BenchError(f"workers {sorted(missing)} did not answer a ping in {timeout}s")
    finally:
        probe.close()


# --- A customer, as the chat page behaves -----------------------------------------------------


@dataclass
class MessageResult:
    """One customer message and its reply, as the customer's page saw them. Times are seconds
    from the round's start."""

    customer: int
    conversation_id: str
    number: int  # the customer's n-th message
    client_id: str
    text: str
    sent_at: float | None = None
    acked_at: float | None = None
    reply_id: int | None = None
    other_reply_ids: list[int] = field(default_factory=list)  # acks naming another reply
    second_socket_acks: list[int] = field(default_factory=list)  # double-send: its reply ids
    progress: list[float] = field(default_factory=list)  # reply frames applied
    finished_at: float | None = None
    finished_by: str = ""  # "frame" (reply.done) or "snapshot" (a final stored turn)
    status: str | None = None
    final_text: str | None = None
    streamed_text: str = ""  # deltas since the last reply.start
    starts: int = 0
    resumes: int = 0
    replayed_frames: int = 0  # frames with a seq already applied
    errors: list[str] = field(default_factory=list)
    # Filled in by the analysis:
    expected_known: bool = False
    lost_tokens: int = 0
    extra_chars: int = 0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    hung: bool = False
    longest_gap_s: float = 0.0


REFUSALS = ("unauthenticated", "forbidden", "not_found")


class Refusal(BenchError):
    """The server refused the socket for good (the page stops reconnecting)."""


class Deadline:
    """When waiting ends: unknown until the fault is over, then `hang_after` later."""

    def __init__(self) -> None:
        self.at = float("inf")


class CustomerClient:
    """One customer's chat page: one socket at a time, reconnecting with backoff; replies
    applied in seq order (reply.done, and here reply.start too, may jump a gap); a resume
    after a gap or a stall, and for every unfinished reply after a reconnect."""

    def __init__(self, index: int, seat: load.Seat, current: Round, deadline: Deadline) -> None:
        self.index = index
        self.seat = seat
        self.round = current
        self.deadline = deadline
        self.ws: Any = None
        self.attempt = 0
        self.reconnects = 0
        self.messages: list[MessageResult] = []
        self.message: MessageResult | None = None
        self.pending: dict[int, list[dict[str, Any]]] = {}  # frames of replies not acked yet
        self._reset_reply()

    def _reset_reply(self) -> None:
        self.last_seq = 0
        self.buffer: dict[int, dict[str, Any]] = {}
        self.finished = False
        self.stall_due: float | None = None
        self.stall_wait = STALL_WAIT_S
        self.gap_due: float | None = None
        self.gap_wait = GAP_WAIT_S
        self.pending.clear()

    # Sockets ----------------------------------------------------------------------------------

    async def open_socket(self) -> tuple[Any, dict[str, Any]]:
        from websockets.asyncio.client import connect

        web_url = self.round.web_url
        ws = await connect(
            web_url.replace("http://", "ws://") + f"/ws/chat/{self.seat.conversation_id}/",
            origin=web_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sb_visitor={self.seat.cookie}"},
            proxy=None,
            open_timeout=10,
            ping_interval=None,
            max_size=2**20,
        )
        try:
            async with asyncio.timeout(10):
                snapshot = json.loads(await ws.recv())
            if snapshot.get("type") == "error" and snapshot.get("code") in REFUSALS:
                raise Refusal(f"the socket was refused: {snapshot}")
            if snapshot.get("type") != "conversation":
                raise BenchError(f"expected the conversation snapshot, got {snapshot}")
        except BaseException:
            await ws.close()
            raise
        return ws, snapshot

    async def connect(self, *, after_close: bool = False) -> None:
        """(Re)connect as the page does: after a close, wait (backoff with jitter) before each
        attempt until a snapshot arrives; then apply it, resume unfinished replies and send
        what was not acknowledged."""
        while self.ws is None:
            if after_close:
                await asyncio.sleep(self._reconnect_delay())
            after_close = True
            try:
                self.ws, snapshot = await self.open_socket()
            except Refusal as refusal:
                # The page stops reconnecting after these (its FINAL_CLOSE_CODES).
                if self.message is None:
                    raise
                self.message.errors.append(str(refusal))
                self._finish("refused", "", "snapshot")
                return
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
                if self.message is not None:
                    self.message.errors.append(f"connect: {type(exc).__name__}")
                if DEBUG:
                    print(f"customer {self.index} connect: {exc!r}", file=sys.stderr)
                if time.monotonic() > self.deadline.at:
                    return
                continue
            self.attempt = 0
            await self.apply_snapshot(snapshot.get("turns") or [])

    def _reconnect_delay(self) -> float:
        base = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2**self.attempt)
        self.attempt += 1
        return min(RECONNECT_MAX_S, base * (1 + random.random() * 0.5))  # noqa: S311

    def drop(self) -> None:
        """The network drops: no close frame, the socket is just gone."""
        if self.ws is not None:
            self.ws.transport.abort()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.ws.close()
            self.ws = None

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(Exception):  # a dead socket shows in the next recv
            await self.ws.send(json.dumps(frame))

    # One message --------------------------------------------------------------------------------

    async def chat(self, text: str, number: int, client_id: str | None = None) -> MessageResult:
        client_id = client_id or f"faults-{secrets.token_hex(8)}"
        message = MessageResult(self.index, self.seat.conversation_id, number, client_id, text)
        self.messages.append(message)
        self.message = message
        self._reset_reply()
        await self.connect()
        message.sent_at = self.round.clock()
        await self.send({"type": "message", "client_id": message.client_id, "text": text})
        while not self.finished and time.monotonic() < self.deadline.at:
            if self.ws is None:
                self.reconnects += 1
                await self.connect(after_close=True)
                continue
            timeout = min(1.0, *(d - self.round.clock() for d in self._timers()))
            try:
                raw = await asyncio.wait_for(self.ws.recv(), timeout=max(0.01, timeout))
            except TimeoutError:
                await self._on_timers()
                continue
            except Exception as exc:  # noqa: BLE001 - closed, reset: reconnect as the page does
                message.errors.append(f"socket: {type(exc).__name__}")
                if DEBUG:
                    print(f"customer {self.index}: {exc!r}", file=sys.stderr)
                await self.close()
                self.stall_due = self.gap_due = None  # suspended while offline
                continue
            await self.handle(json.loads(raw))
        return message

    def _timers(self) -> list[float]:
        return [d for d in (self.stall_due, self.gap_due) if d is not None] or [float("inf")]

    async def _on_timers(self) -> None:
        now = self.round.clock()
        if self.gap_due is not None and now >= self.gap_due:
            await self.resume()
            self.gap_wait = min(GAP_WAIT_MAX_S, self.gap_wait * 2)
            self.gap_due = now + self.gap_wait if self.buffer else None
        if self.stall_due is not None and now >= self.stall_due:
            await self.resume()
            self.stall_wait = min(STALL_WAIT_MAX_S, self.stall_wait * 2)
            self.stall_due = now + self.stall_wait

    async def resume(self) -> None:
        message = self.message
        if message is None or message.reply_id is None or self.finished:
            return
        message.resumes += 1
        await self.send({"type": "resume", "reply_id": message.reply_id, "after": self.last_seq})

    def _arm_stall(self) -> None:
        self.stall_due = None if self.finished else self.round.clock() + self.stall_wait

    async def apply_snapshot(self, turns: list[dict[str, Any]]) -> None:
        message = self.message
        if message is None or message.sent_at is None:
            return
        stored = next(
            (t for t in turns if t.get("author") == "customer"
             and t.get("client_id") == message.client_id), None,
        )  # fmt: skip
        if stored is not None and message.reply_id is None:
            # The page shows the bot turn after it; only the ack would name it otherwise.
            reply = next((t for t in turns if t.get("author") == "bot" and t["id"] > stored["id"]),
                         None)  # fmt: skip
            if reply is not None:
                await self._acked(int(reply["id"]))
        for turn in turns:
            if turn.get("author") != "bot" or turn.get("id") != message.reply_id:
                continue
            if turn.get("status") in FINAL:
                self._finish(turn.get("status"), turn.get("text", ""), "snapshot")
            else:
                await self.resume()
                self._arm_stall()
        if stored is None and message.acked_at is None:
            # Unacknowledged: the page sends it again; the server de-duplicates by client_id.
            await self.send({"type": "message", "client_id": message.client_id,
                             "text": message.text})  # fmt: skip

    async def _acked(self, reply_id: int) -> None:
        message = self.message
        assert message is not None
        message.acked_at = message.acked_at or self.round.clock()
        if message.reply_id is None:
            message.reply_id = reply_id
            self._arm_stall()
            for frame in self.pending.pop(reply_id, []):
                await self.apply_reply_frame(frame)
        elif reply_id != message.reply_id and reply_id not in message.other_reply_ids:
            message.other_reply_ids.append(reply_id)

    async def handle(self, frame: dict[str, Any]) -> None:
        message = self.message
        assert message is not None
        kind = frame.get("type")
        if kind == "ack" and frame.get("client_id") == message.client_id:
            if isinstance(frame.get("reply_id"), int):
                await self._acked(frame["reply_id"])
                if frame.get("duplicate") and not self.finished:
                    await self.resume()
        elif kind == "error":
            code = str(frame.get("code"))
            message.errors.append(code)
            if frame.get("client_id") == message.client_id and message.acked_at is None:
                self._finish("refused", "", "frame")  # the page marks the message failed
        elif kind in ("reply.start", "reply.delta", "reply.done"):
            reply_id = frame.get("reply_id")
            if reply_id == message.reply_id:
                await self.apply_reply_frame(frame)
            elif message.reply_id is None and isinstance(reply_id, int):
                self.pending.setdefault(reply_id, []).append(frame)

    async def apply_reply_frame(self, frame: dict[str, Any]) -> None:
        message = self.message
        assert message is not None
        seq = frame.get("seq")
        if not isinstance(seq, int) or seq <= 0:
            return
        if seq <= self.last_seq:
            message.replayed_frames += 1
            return
        if frame["type"] in ("reply.done", "reply.start"):
            # reply.done carries the whole text; reply.start starts the text over (a reply
            # taken over by another worker may number its frames from much higher up).
            self._apply_in_order(frame)
            self.buffer = {s: f for s, f in self.buffer.items() if s > seq}
        elif seq == self.last_seq + 1:
            self._apply_in_order(frame)
        else:
            self.buffer[seq] = frame
        while (next_frame := self.buffer.pop(self.last_seq + 1, None)) is not None:
            self._apply_in_order(next_frame)
        if not self.buffer:
            self.gap_due, self.gap_wait = None, GAP_WAIT_S
        elif self.gap_due is None:
            self.gap_due = self.round.clock() + self.gap_wait

    def _apply_in_order(self, frame: dict[str, Any]) -> None:
        message = self.message
        assert message is not None
        self.last_seq = frame["seq"]
        message.progress.append(round(self.round.clock(), 3))
        if frame["type"] == "reply.start":
            self.finished = False
            message.starts += 1
            message.streamed_text = ""
        elif frame["type"] == "reply.delta":
            if not self.finished:
                message.streamed_text += str(frame.get("text", ""))
        else:
            self._finish(frame.get("status"), frame.get("text", ""), "frame")
        self.stall_wait = STALL_WAIT_S
        self._arm_stall()

    def _finish(self, status: Any, text: Any, by: str) -> None:
        message = self.message
        assert message is not None
        self.finished = True
        self.stall_due = self.gap_due = None
        if message.finished_at is None:
            message.finished_at = round(self.round.clock(), 3)
            message.progress.append(message.finished_at)
        message.status, message.final_text, message.finished_by = str(status), str(text), by


async def second_socket_acks(ws: Any, frame: dict[str, Any]) -> list[int]:
    """The double-send scenario's other tab: sends the same message on its socket. Returns the
    reply ids its acks name."""
    reply_ids: list[int] = []
    try:
        # A missing ack here shows on the main socket, which sends the same message.
        with contextlib.suppress(Exception):
            await ws.send(json.dumps(frame))
            async with asyncio.timeout(15):
                while not reply_ids:
                    got = json.loads(await ws.recv())
                    ours = got.get("client_id") == frame["client_id"]
                    if got.get("type") == "ack" and ours:
                        reply_ids.append(int(got["reply_id"]))
                    elif got.get("type") == "error" and ours:
                        break
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    return reply_ids


# --- Scenarios --------------------------------------------------------------------------------


Inject = Callable[[Round], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    inject: Inject
    at_send: bool = False  # the fault is there from the first frame (else mid-reply)
    keep_chatting: bool = False  # customers send another message after each reply
    redis_appendonly: bool = False
    two_sockets: bool = False  # every message also sent on a second socket
    model_faults: bool = False  # the model's fault mix armed before the messages go


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


async def kill_worker(current: Round) -> None:
    worker = current.workers[0]
    current.note(f"kill -9 {worker.name} (pid {worker.child.process.pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker.child.process.pid, signal.SIGKILL)


async def _kill_redis_and_restart(current: Round, appendonly: bool) -> None:
    redis = current.suite.redis
    current.note("kill -9 redis-server")
    await in_thread(redis.kill)
    await asyncio.sleep(3)
    await in_thread(lambda: redis.start(appendonly=appendonly))
    current.note(f"redis-server restarted (appendonly {'yes' if appendonly else 'no'})")


async def kill_redis_aof(current: Round) -> None:
    await _kill_redis_and_restart(current, appendonly=True)


async def kill_redis_lost(current: Round) -> None:
    await _kill_redis_and_restart(current, appendonly=False)


async def model_faults(current: Round) -> None:
    """Armed before the messages go: every request draws its fault."""
    current.note(f"model faults {MODEL_FAULT_MIX} (the rest answered normally)")


def arm_model_faults(fake_url: str, seed: int) -> None:
    body = {
        "fault": "mix", "mix": MODEL_FAULT_MIX, "seed": seed, "retry_after": "1",
        "cut_after": 15, "hang_s": 60,
    }  # fmt: skip
    control(fake_url, "faults", body)


def control(fake_url: str, action: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the fake server on loopback
        f"{fake_url}/_control/{action}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


async def drop_sockets(current: Round) -> None:
    current.note("every customer's socket dropped")
    for client in current.clients:
        client.drop()


async def kill_web_process(current: Round) -> None:
    import psutil

    port = int(current.web_url.rsplit(":", 1)[1])

    def sockets(process: psutil.Process) -> int:
        return sum(
            1 for c in process.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )  # fmt: skip

    parent = psutil.Process(current.web.child.process.pid)
    servers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
    # The kernel may hand most connections to one process: kill the one serving the most.
    held = {p.pid: sockets(p) for p in servers}
    target = max(servers, key=lambda p: held[p.pid]) if servers else parent
    current.note(f"kill -9 web process {target.pid}; customer sockets per process {held}")
    target.kill()


async def terminate_postgres_connections(current: Round) -> None:
    count = await in_thread(current.suite.postgres.terminate_all)
    current.note(f"pg_terminate_backend: {count} connections")


async def double_send(current: Round) -> None:
    current.note("every message sent on two sockets at once")


async def deploy(current: Round) -> None:
    """docker compose's stop, worker after worker: SIGTERM, SIGKILL after the grace period;
    the supervisor starts the new one, which must answer a ping before the next goes."""
    grace = current.suite.opts.grace_s
    for worker, name in zip(current.workers, current.worker_names, strict=True):
        process = worker.child.process
        current.note(f"SIGTERM {worker.name} (pid {process.pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        stopped_by = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < stopped_by:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            current.note(f"SIGKILL {worker.name} after {grace:g} s")
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        else:
            current.note(f"{worker.name} exited by itself")
        await in_thread(lambda name=name: ping_workers(current, [name], timeout=90))
        current.note(f"{worker.name} restarted and answering")


async def restart_postgres(current: Round) -> None:
    current.note("pg_ctl restart -m fast")
    await in_thread(current.suite.postgres.restart)
    current.note("Postgres back")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("worker-kill", "kill -9 of one Celery worker (restarted at once)", kill_worker),
        Scenario("redis-aof", "Redis killed, back after 3 s, appendonly yes", kill_redis_aof,
                 redis_appendonly=True),
        Scenario("redis-lost", "Redis killed, back after 3 s, no persistence", kill_redis_lost),
        Scenario("model-faults", "model: 30% 429, 20% 500, 20% cut, 10% stalls", model_faults,
                 at_send=True, model_faults=True),
        Scenario("socket-drop", "every client drops its socket mid-reply", drop_sockets),
        Scenario("web-kill", "kill -9 of one web process", kill_web_process),
        Scenario("pg-terminate", "all Postgres connections terminated",
                 terminate_postgres_connections),
        Scenario("double-send", "the same message sent on two sockets", double_send,
                 at_send=True, two_sockets=True),
        Scenario("deploy", "SIGTERM deploy: every worker restarted in turn", deploy,
                 keep_chatting=True),
        Scenario("pg-restart", "Postgres restart (pg_ctl restart -m fast)", restart_postgres),
    )
}  # fmt: skip


# --- Running a round --------------------------------------------------------------------------

MAX_MESSAGES_PER_CUSTOMER = 10  # the rate limit allows 20 a minute


async def run_customers(current: Round, seats: list[load.Seat]) -> dict[str, float]:
    scenario, opts = current.scenario, current.suite.opts
    deadline = Deadline()
    current.clients = [CustomerClient(i, seat, current, deadline) for i, seat in enumerate(seats)]
    await asyncio.gather(*(c.connect() for c in current.clients))
    fault_over = asyncio.Event()

    async def customer(client: CustomerClient) -> None:
        for number in range(MAX_MESSAGES_PER_CUSTOMER):
            text = load.question(f"{scenario.name}:{number}", client.index)
            if scenario.two_sockets:
                await double_sent(client, text, number)
            else:
                await client.chat(text, number)
            if not scenario.keep_chatting or fault_over.is_set():
                break
            if time.monotonic() > deadline.at:
                break
            await asyncio.sleep(0.3)  # reading the answer
        await client.close()

    tasks = [asyncio.create_task(customer(c)) for c in current.clients]
    if DEBUG:
        asyncio.create_task(debug_dump(current))
    fault_start = current.clock()
    if not scenario.at_send:
        await mid_reply(current)
        fault_start = current.clock()
    current.note(f"fault: {scenario.title}")
    try:
        await scenario.inject(current)
    finally:
        fault_end = current.clock()
        fault_over.set()
        deadline.at = time.monotonic() + opts.hang_after_s
        current.note("fault over")
    await asyncio.gather(*tasks)
    return {"fault_start": round(fault_start, 3), "fault_end": round(fault_end, 3)}


async def debug_dump(current: Round) -> None:
    """--debug: every customer's state every 10 s, on stderr."""
    while True:
        await asyncio.sleep(10)
        for c in current.clients:
            m = c.message
            print(
                f"[{current.clock():.1f}] customer {c.index}: ws={c.ws is not None} "
                f"finished={c.finished} last_seq={c.last_seq} stall={c.stall_due} "
                f"reply={m and m.reply_id} progress={m and len(m.progress)} "
                f"errors={m and m.errors[-3:]}",
                file=sys.stderr,
            )


async def double_sent(client: CustomerClient, text: str, number: int) -> None:
    """Send the message on the client's socket and, at the same moment, on a second one (the
    same page open twice, or a re-send racing the first)."""
    client_id = f"faults-{secrets.token_hex(8)}"
    frame = {"type": "message", "client_id": client_id, "text": text}
    second_socket, _snapshot = await client.open_socket()
    message, reply_ids = await asyncio.gather(
        client.chat(text, number, client_id), second_socket_acks(second_socket, frame)
    )
    message.second_socket_acks = reply_ids
    if not reply_ids:
        message.errors.append("no ack on the second socket")
    for reply_id in reply_ids:
        if message.reply_id is not None and reply_id != message.reply_id:
            message.other_reply_ids.append(reply_id)


async def mid_reply(current: Round, timeout: float = 20) -> None:
    """Until most customers are reading their reply, then a little longer."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        streaming = sum(
            1 for c in current.clients if c.message is not None and len(c.message.progress) >= 3
        )
        if streaming * 4 >= len(current.clients) * 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


def run_round(suite: Suite, scenario: Scenario, index: int) -> dict[str, Any]:
    opts = suite.opts
    print(f"  {scenario.name}: starting…", end="", flush=True)
    control(suite.fake_url, "reset", {})
    current = start_round(suite, scenario, index)
    try:
        seats = load.create_seats(opts.customers)
        if scenario.model_faults:
            arm_model_faults(suite.fake_url, opts.seed)
        print(" customers…", end="", flush=True)
        window = load.run_async(run_customers(current, seats))
        control(suite.fake_url, "faults", {"fault": "none"})
        requests = control(suite.fake_url, "requests")
    finally:
        stop_round(current)
    messages = [m for c in current.clients for m in c.messages]
    db = database_view([s.conversation_id for s in seats])
    summary = analyse(scenario, messages, window, requests, db, opts)
    summary.update(
        events=current.events,
        restarts={s.name: s.restarted_at for s in [current.web, *current.workers]},
        reconnects=sum(c.reconnects for c in current.clients),
        model_requests=dict(Counter(str(r.get("outcome")) for r in requests)),
        messages_raw=[asdict(m) for m in messages],
        logs=str(suite.log_dir / f"{index:02d}-{scenario.name}"),
    )
    verdict = "ok" if summary["passed"] else "FAIL"
    print(f" {summary['done']}/{summary['messages']} done, {verdict}.")
    return summary


# --- Analysis ---------------------------------------------------------------------------------


def database_view(conversation_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every turn of the round's conversations, from the database."""
    from django.db import connections

    from conversations.models import Turn

    connections.close_all()  # Postgres may have been restarted: no stale connection
    turns = Turn.objects.filter(conversation_id__in=conversation_ids).values(
        "id", "conversation_id", "author", "text", "status", "client_message_id", "reply_to_id"
    )
    by_conversation: dict[str, list[dict[str, Any]]] = {c: [] for c in conversation_ids}
    for turn in turns.order_by("id"):
        by_conversation[str(turn["conversation_id"])].append(turn)
    connections.close_all()
    return by_conversation


def expected_replies(requests: list[dict[str, Any]], reply_tokens: int) -> dict[str, list[str]]:
    """The fake model's reply to each recorded request, by the last user message's text:
    what a customer must end up reading (every retry of a message asks the same)."""
    from tests.fake_llm import apply_stop, expected_reply

    expected: dict[str, list[str]] = {}
    for record in requests:
        body = record.get("body") or {}
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user is None or not isinstance(last_user.get("content"), str):
            continue
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n = min(reply_tokens, limit) if limit else reply_tokens
        tokens, _ = apply_stop(expected_reply(messages, n), body.get("stop"))
        expected[last_user["content"]] = tokens
    return expected


def analyse(
    scenario: Scenario, messages: list[MessageResult], window: dict[str, float],
    requests: list[dict[str, Any]], db: dict[str, list[dict[str, Any]]], opts: Options,
) -> dict[str, Any]:  # fmt: skip
    expected = expected_replies(requests, opts.reply_tokens)
    deadline = window["fault_end"] + opts.hang_after_s
    stray_bot_turns = sum(
        1 for turns in db.values() for t in turns if t["author"] == "bot" and not t["reply_to_id"]
    )
    for m in messages:
        turns = db.get(m.conversation_id, [])
        customer_turns = [t for t in turns if t["author"] == "customer"]
        replies = {t["reply_to_id"]: t for t in turns if t["author"] == "bot" and t["reply_to_id"]}
        stored = [t for t in customer_turns if t["text"] == m.text]
        if len(stored) > 1:
            m.doubled.append(f"customer message stored {len(stored)} times")
        by_id = [t for t in customer_turns if t["client_message_id"] == m.client_id]
        if not by_id:
            m.lost.append("customer message not stored under its client_id")
        reply = replies.get(stored[0]["id"]) if stored else None
        if stored and reply is None:
            m.lost.append("no bot reply turn for the stored message")
        elif reply is not None and reply["status"] not in FINAL:
            m.hung = True
            m.errors.append(f"reply {reply['id']} still {reply['status']} in the database")
        elif reply is not None and reply["status"] == "withdrawn":
            m.lost.append("reply withdrawn")
    for m in messages:
        if m.finished_at is None:
            m.hung = True
        if m.status == "refused":
            m.lost.append("message refused: " + ", ".join(m.errors[-2:]))
        if m.other_reply_ids:
            m.doubled.append(f"acks name other replies {m.other_reply_ids}")
        tokens = expected.get(m.text) or next(
            (tokens for content, tokens in expected.items() if m.text in content), None
        )
        m.expected_known = tokens is not None
        if m.status == "done" and tokens is not None and m.final_text is not None:
            m.lost_tokens, _lost_chars, m.extra_chars = load.compare_text(m.final_text, tokens)
            if m.lost_tokens:
                m.lost.append(f"{m.lost_tokens} expected tokens missing from the final text")
            if m.extra_chars:
                m.doubled.append(f"{m.extra_chars} characters more than the expected text")
        # The longest wait without progress that ends after the fault started.
        timeline = [m.sent_at or 0.0, *m.progress, m.finished_at if m.finished_at else deadline]
        gaps = [b - a for a, b in zip(timeline, timeline[1:], strict=False)
                if b > window["fault_start"]]  # fmt: skip
        m.longest_gap_s = round(max(gaps, default=0.0), 3)
    if stray_bot_turns and messages:
        messages[0].doubled.append(f"{stray_bot_turns} bot turns answering no message")
    counts = {
        "messages": len(messages),
        "done": sum(1 for m in messages if m.status == "done" and not m.hung),
        "apologised": sum(1 for m in messages if m.status == "failed" and not m.hung),
        "lost": sum(1 for m in messages if m.lost),
        "doubled": sum(1 for m in messages if m.doubled),
        "hung": sum(1 for m in messages if m.hung),
    }
    recovery = max((m.longest_gap_s for m in messages), default=0.0)
    intact = counts["lost"] == counts["doubled"] == counts["hung"] == 0
    apologies_bound = None
    passed = intact and recovery <= RECOVERY_BOUND_S
    if scenario.model_faults:
        # A reply apologises only when every attempt failed: no more than the retry budget
        # explains for the mix's odds.
        apologies_bound = apology_bound(
            len(messages), int(opts.extra_env.get("REPLY_MAX_ATTEMPTS", "3"))
        )
        passed = passed and counts["apologised"] <= apologies_bound
    notes = sorted({n for m in messages for n in [*m.lost, *m.doubled]})[:8]
    return {
        "scenario": scenario.name,
        "title": scenario.title,
        **counts,
        "recovery_s": recovery,
        "recovery_at_least": any(m.hung for m in messages),
        "apologies_bound": apologies_bound,
        "passed": passed,
        "window": window,
        "resumes": sum(m.resumes for m in messages),
        "restarted_replies": sum(1 for m in messages if m.starts > 1),
        # Only replies read to the end frame by frame (a snapshot gives the final text at once).
        "streamed_differs_from_final": sum(
            1
            for m in messages
            if m.status == "done" and m.finished_by == "frame" and m.streamed_text != m.final_text
        ),
        "reply_s_median": median_reply_seconds(messages),
        "unknown_expected": sum(1 for m in messages if m.status == "done" and not m.expected_known),
        "errors": sorted({e for m in messages for e in m.errors})[:8],
        "notes": notes,
    }


def apology_bound(messages: int, attempts: int) -> int:
    """The most apologies the retry budget explains: each attempt fails with the mix's odds,
    independently; the expected count plus three standard deviations."""
    every_attempt_fails = sum(MODEL_FAULT_MIX.values()) ** attempts
    expected = messages * every_attempt_fails
    spread = (messages * every_attempt_fails * (1 - every_attempt_fails)) ** 0.5
    return int(expected + 3 * spread)


def median_reply_seconds(messages: list[MessageResult]) -> float | None:
    """From the first reply frame to the end, for the replies that ended by frame: how long
    customers are mid-reply, so that a fault lands inside replies."""
    durations = sorted(
        m.finished_at - m.progress[0]
        for m in messages
        if m.finished_at is not None and m.finished_by == "frame" and m.progress
    )
    return round(durations[len(durations) // 2], 2) if durations else None


# --- Report -----------------------------------------------------------------------------------


def print_report(rows: list[dict[str, Any]], opts: Options) -> None:
    print()
    header = (
        f"{'scenario':<14}{'messages':>9}{'done':>6}{'apologised':>12}{'lost':>6}{'doubled':>9}"
        f"{'hung':>6}{'recover s':>11}  result"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        recovery = f"{'≥' if row['recovery_at_least'] else ''}{row['recovery_s']:.1f}"
        print(
            f"{row['scenario']:<14}{row['messages']:>9}{row['done']:>6}{row['apologised']:>12}"
            f"{row['lost']:>6}{row['doubled']:>9}{row['hung']:>6}{recovery:>11}  "
            f"{'ok' if row['passed'] else 'FAIL'}"
        )
    print()
    print(
        f"Gate: 0 lost, 0 doubled, 0 hung and recovery ≤ {RECOVERY_BOUND_S:g} s per scenario; "
        f"hung = no final reply {opts.hang_after_s:g} s after the fault ended; model faults: "
        "also no more apologies than the retry budget explains."
    )
    for row in rows:
        details = [
            f"{row['title']}",
            f"median reply {row['reply_s_median']} s",
            f"resumes {row['resumes']}, reconnects {row['reconnects']}, "
            f"replies restarted {row['restarted_replies']}",
        ]
        restarts = {k: len(v) for k, v in row["restarts"].items() if v}
        if restarts:
            details.append(f"process restarts {restarts}")
        if SCENARIOS[row["scenario"]].model_faults:
            details.append(f"model requests by outcome {row['model_requests']}")
            details.append(f"apologies the retry budget explains ≤ {row['apologies_bound']}")
        if row["streamed_differs_from_final"]:
            details.append(f"streamed text ≠ final text: {row['streamed_differs_from_final']}")
        if row["unknown_expected"]:
            details.append(f"replies not checkable (no model request): {row['unknown_expected']}")
        if row["notes"]:
            details.append("problems: " + " | ".join(row["notes"][:4]))
        if row["errors"]:
            details.append("errors: " + ", ".join(row["errors"][:4]))
        print(f"  {row['scenario']}: " + "; ".join(details))


def save_json(rows: list[dict[str, Any]], opts: Options, env: dict[str, Any]) -> Path:
    path = opts.json_path or (
        load.BENCH_DIR / f"faults-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    path.write_text(
        json.dumps(
            {"environment": env, "options": options, "scenarios": rows}, indent=1, default=str
        )  # fmt: skip
    )
    return path


# --- Main -------------------------------------------------------------------------------------


def missing_binaries(broker: str) -> list[str]:
    needed = list(BINARIES.values()) + (["rabbitmqctl"] if broker == "amqp" else [])
    return [b for b in needed if shutil.which(b) is None]


@contextlib.contextmanager
def suite_running(opts: Options, log_dir: Path) -> Iterator[Suite]:
    with contextlib.ExitStack() as cleanup:
        root = Path(tempfile.mkdtemp(prefix="sbfaults-"))
        cleanup.callback(shutil.rmtree, root, True)
        stack_opts = opts.stack_options()
        fake, fake_url = load.start_fake_llm(stack_opts, log_dir, load.base_env())
        cleanup.callback(fake.stop)
        postgres = ThrowawayPostgres(root)
        cleanup.callback(postgres.stop)
        postgres.start()
        redis = OwnRedis(root, log_dir)
        cleanup.callback(redis.stop)
        redis.start(appendonly=False)
        suite = Suite(opts, log_dir, fake, fake_url, postgres, redis)
        vhost = RabbitVhost(f"sb-faults-{os.getpid()}-setup") if opts.broker == "amqp" else None
        if vhost:
            cleanup.callback(vhost.delete)
        env = app_env(suite, vhost)
        load.migrate(env, log_dir)
        load.setup_django(env)
        # Celery reads CELERY_BROKER_URL from the environment before any app's own setting:
        # the probes that ping each round's workers must name that round's broker instead.
        os.environ.pop("CELERY_BROKER_URL", None)
        yield suite


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    missing = missing_binaries(opts.broker)
    if missing:
        print(f"Cannot run the fault suite: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    started = datetime.now()
    log_dir = load.BENCH_DIR / f"faults-logs-{started.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"Support Bot fault suite: {opts.customers} customers a scenario, broker {opts.broker}")
    print(f"Starting Postgres, Redis, the fake model (logs in {log_dir})…")
    rows: list[dict[str, Any]] = []
    stopped: int | None = None
    with load.bounded(opts.max_run_s):
        try:
            with suite_running(opts, log_dir) as suite:
                print("Scenarios:")
                for index, name in enumerate(opts.scenarios):
                    rows.append(run_round(suite, SCENARIOS[name], index))
        except KeyboardInterrupt as exc:
            print(f"\nInterrupted ({exc or 'Ctrl-C'}); stopping everything…", file=sys.stderr)
            stopped = 130
        except Exception as exc:  # noqa: BLE001 - report what was measured, then fail
            detail = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
            print(f"\nFault suite stopped: {detail}", file=sys.stderr)
            stopped = 2
    if stopped is not None and not rows:
        return stopped
    env = {
        "cores": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "broker": opts.broker,
        "logs": str(log_dir),
    }
    print_report(rows, opts)
    path = save_json(rows, opts, env)
    print(f"\nResults: {path}")
    if stopped is not None:
        return stopped
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
