"""Shared fixtures. Personas: alice and bob are customers; bob must never see alice's data."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import channels.testing.application
import psutil
import psycopg
import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.backends.base.creation import TEST_DATABASE_PREFIX

from conversations.models import Conversation, Customer
from conversations.visitors import signed_visitor_cookie
from support_bot.processes import web_command, worker_command
from support_bot.redis_clients import sync_client

pytest_plugins = ["tests.fixtures_fake_llm"]

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://127.0.0.1"
TEST_PROCESS_POOL_SIZE = 70
LEFT_TO_THE_OTHER_PASS = pytest.StashKey[list[str]]()

# Passwords hashed in this process take 1,000 PBKDF2 iterations, not production's 1,000,000
# (tests/hashers.py); servers the tests start keep production's hashers.
settings.PASSWORD_HASHERS = ["tests.hashers.QuickPBKDF2PasswordHasher"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs the suite twice, once per path, side by side (Makefile). A test that
    gives the same result on both runs on one of them: `default_pass_only(reason=...)` on the
    embedded default, `production_pass_only(reason=...)` on the production path, chosen to keep
    the two passes about as long. Each pass lists what it left to the other. Run alone (not
    MAKE_TEST_PASSES=both), a pass runs every test that can run on its path."""
    on_production = bool(os.environ.get("DATABASE_URL"))
    if on_production:
        left_out = "default_pass_only"
    elif os.environ.get("MAKE_TEST_PASSES") == "both":
        left_out = "production_pass_only"
    else:
        return
    once = [item for item in items if item.get_closest_marker(left_out)]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not item.get_closest_marker(left_out)]
        config.stash[LEFT_TO_THE_OTHER_PASS] = [
            f"{item.nodeid}: {item.get_closest_marker(left_out).kwargs['reason']}" for item in once
        ]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left = config.stash.get(LEFT_TO_THE_OTHER_PASS, [])
    if left:
        terminalreporter.write_sep("-", f"{len(left)} tests left to the other pass")
        for line in left:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran on a module's app carries the end of its processes' output: a
    browser test that times out says nothing of what the server and the worker did."""
    report = yield
    if report.failed:
        for app in RUNNING_MODULE_APPS:
            for name, child in (("web", app.web), ("worker", app.worker)):
                if child is not None:
                    report.sections.append(
                        (f"module app's {name} output (end)", "".join(child.output)[-6000:])
                    )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from support_bot import embedded_redis

    if embedded_redis.started_here is not None:
        embedded_redis.stop(embedded_redis.started_here)


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    # In-process sockets store messages on a thread pool; with persistent connections those
    # threads would still hold sessions when the test database is dropped. Child processes
    # (workers, servers) keep the production setting.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict):
        # Headroom for the threads of in-process servers and sockets that hold a connection at
        # once (consumers give theirs back after each call, see
        # consumers_give_their_connections_back). A larger pool in this process only; workers
        # and servers keep DATABASE_POOL_SIZE.
        pool["max_size"] = TEST_PROCESS_POOL_SIZE


def _close_connections_off_the_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        close_old_connections()


@pytest.fixture(scope="session", autouse=True)
def consumers_give_their_connections_back() -> Iterator[None]:
    """channels' test communicator turns the consumers' closing of database connections
    (channels.db.close_old_connections) into a no-op while a test sends or receives, for tests
    whose rows live in the main thread's uncommitted transaction. Consumer code runs on other
    threads, whose pooled connections then stayed borrowed for good, one a socket test, and one
    was still open when the test database was dropped. Off the main thread they are closed
    after each call again, as in production; the main thread's are left to the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(channels.testing.application, "no_op", _close_connections_off_the_main_thread)
        yield


@pytest.fixture(scope="session", autouse=True)
def no_session_outlives_the_suite(django_db_setup: None) -> Iterator[None]:
    """Before the test database is dropped: a thread that ended holding a pooled connection
    never gives it back (closing the pool leaves borrowed connections open), and its session
    ends only once the thread's objects are collected. Sessions still open after that and after
    closing the pool, as Django does next, are named with the process holding them, so a leak
    shows up as such rather than as Django's bare "being accessed by other users"."""
    yield
    # No test database when no test of the run used one (pytest-django then creates none).
    if connection.vendor != "postgresql" or not str(connection.settings_dict["NAME"]).startswith(
        TEST_DATABASE_PREFIX
    ):
        return
    gc.collect()
    connection.close_pool()
    params = connection.settings_dict
    with psycopg.connect(  # not through the pool, which would open sessions of its own
        dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"] or None,
        host=params["HOST"] or None, port=params["PORT"] or None, autocommit=True,
    ) as own:  # fmt: skip
        others = _other_sessions(own)
        deadline = time.monotonic() + 3
        while others and time.monotonic() < deadline:  # a closed session takes a moment to end
            time.sleep(0.1)
            others = _other_sessions(own)
    if others:
        listed = "; ".join(
            f"{_process_on_port(port)}: {state} after {query[:80]!r}"
            for port, state, query in others
        )
        warnings.warn(
            pytest.PytestWarning(f"sessions left on the test database: {listed}"), stacklevel=1
        )


def _other_sessions(own: psycopg.Connection) -> list[tuple[int, str, str]]:
    rows = own.execute(
        "SELECT client_port, state, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return [(int(port or 0), str(state), str(query)) for port, state, query in rows]


def _process_on_port(port: int) -> str:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            if conn.pid == os.getpid():
                return "this test process"
            try:
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline())[:120]})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return f"a process gone or unknown (port {port})"


@pytest.fixture(autouse=True)
def clean_redis_namespace() -> Iterator[None]:
    """Each test starts with none of this run's Redis keys (replay logs, rate limits, queues).

    Rolled-back test rows give their ids back, so a later reply could otherwise find an
    earlier test's replay log under the same id.
    """
    yield
    redis = sync_client()
    keys = [
        k
        for k in redis.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000)
        # A module's app (offline_app) keeps its worker: the queues' bindings, which the
        # worker declared once at its start, must stay for tasks to reach it.
        if "_kombu.binding." not in k
    ]
    if keys:
        redis.delete(*keys)


@pytest.fixture
def second_database(tmp_path: Path, django_db_blocker: Any) -> Iterator[str]:
    """An empty SQLite database beside the test database, under its own alias, reachable
    while the test runs: what `migrate --database` or a compared commit's stack would use."""
    from django.db import connections

    from bench.load import add_database

    alias = "second"
    add_database(alias, f"sqlite:///{tmp_path / 'second.sqlite3'}")
    try:
        with django_db_blocker.unblock():
            yield alias
    finally:
        connections[alias].close()
        del connections.settings[alias]


@pytest.fixture
def alice(db: None) -> Customer:
    return Customer.objects.create(display_name="Alice")


@pytest.fixture
def bob(db: None) -> Customer:
    return Customer.objects.create(display_name="Bob")


@pytest.fixture
def alice_conversation(alice: Customer) -> Conversation:
    return Conversation.objects.create(customer=alice)


def visitor_cookie_header(customer: Customer) -> bytes:
    return f"{settings.CHAT_VISITOR_COOKIE}={signed_visitor_cookie(customer.pk)}".encode()


def store_page_conversation(page: Any) -> Any:
    """Store the conversation a chat page opened (pages store nothing until the visitor
    writes), for tests that play the worker or the team on it from the server side."""
    from conversations import services
    from conversations.visitors import visitor_id_from_cookie

    cookie = next(c for c in page.context.cookies() if c["name"] == settings.CHAT_VISITOR_COOKIE)
    visitor = visitor_id_from_cookie(cookie["value"])
    assert visitor is not None
    conversation_id = services.page_conversation_id(visitor)
    return services.store_conversation(services.open_conversation(visitor, str(conversation_id)))


async def open_chat(
    conversation_id: object,
    customer: Customer | None,
    *,
    origin: str | None = ORIGIN,
    expect_snapshot: bool = True,
) -> WebsocketCommunicator:
    """Connect a customer's socket through the real ASGI stack (origin check, cookie auth)."""
    from support_bot.asgi import application

    headers = []
    if origin:
        headers.append((b"origin", origin.encode()))
    if customer is not None:
        headers.append((b"cookie", visitor_cookie_header(customer)))
    communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    if expect_snapshot:
        snapshot = await communicator.receive_json_from(timeout=5)
        assert snapshot["type"] == "conversation"
        communicator.snapshot = snapshot  # type: ignore[attr-defined]
    return communicator


async def receive_until(
    communicator: WebsocketCommunicator,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 10,
) -> list[dict[str, Any]]:
    """Collect frames until one matches; returns all of them, the match last."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching frame within {timeout}s; got {frames}")
        frame = await communicator.receive_json_from(timeout=remaining)
        frames.append(frame)
        if predicate(frame):
            return frames


def reply_text(frames: list[dict[str, Any]], reply_id: int) -> str:
    """Rebuild a reply from its frames the way the browser does (in seq order, no repeats)."""
    text = ""
    last_seq = 0
    for frame in sorted(
        (f for f in frames if f.get("reply_id") == reply_id and "seq" in f),
        key=lambda f: f["seq"],
    ):
        if frame["seq"] <= last_seq:
            continue
        last_seq = frame["seq"]
        if frame["type"] == "reply.start":
            text = ""
        elif frame["type"] == "reply.delta":
            text += frame["text"]
        elif frame["type"] == "reply.done":
            text = frame["text"]
    return text


# --- Real processes: Celery worker, ASGI server ----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that shares this test run's database and Redis."""
    env = dict(os.environ)
    env.update(
        DATABASE_NAME=str(connection.settings_dict["NAME"]),
        REDIS_URL=settings.REDIS_URL,
        REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class ChildProcess:
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def start_reader(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)

        threading.Thread(target=read, daemon=True).start()

    def wait_for_output(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.output):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not seen; output:\n{''.join(self.output)[-4000:]}")

    def stop(self, sig: int = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(args: list[str], env: dict[str, str]) -> ChildProcess:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    child = ChildProcess(process)
    child.start_reader()
    return child


WorkerFactory = Callable[..., ChildProcess]


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[WorkerFactory]:
    """Start a real Celery worker process (threads pool) on this test's database."""
    started: list[ChildProcess] = []

    def start(threads: int = 4, **env: str) -> ChildProcess:
        if not started:
            # Tasks queued by earlier tests (whose rows are gone) must not reach this worker.
            sync_client().delete("replies", "default")
        worker = spawn(worker_command(threads, name=f"test{len(started)}@%h"), child_env(**env))
        started.append(worker)
        worker.wait_for_output(" ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[Callable[..., str]]:
    """Start the real ASGI server (uvicorn) on this test's database; returns its base URL."""
    started: list[ChildProcess] = []

    def start(port: int | None = None, **env: str) -> str:
        port = port or free_port()
        env.setdefault("ALLOWED_ORIGINS", f"http://127.0.0.1:{port}")
        server = spawn(web_command("127.0.0.1", port), child_env(**env))
        started.append(server)
        server.wait_for_output("Uvicorn running")
        return f"http://127.0.0.1:{port}"

    start.started = started  # type: ignore[attr-defined]
    yield start
    for server in started:
        server.stop()


def start_offline_app(
    asgi_server: Callable[..., str],
    celery_worker: Callable[..., Any],
    word_delay_ms: int,
    port: int | None = None,
    **server_env: str,
) -> str:
    """The whole app (a worker and the ASGI server) with the offline answerer and the demo
    help articles; returns its base URL. server_env: more of the server's environment."""
    from django.core.management import call_command

    call_command("load_demo_kb", verbosity=0)
    env = {"LLM_PROVIDER": "offline", "OFFLINE_WORD_DELAY_MS": str(word_delay_ms)}
    celery_worker(**env)
    return asgi_server(port, **env, **server_env)


@dataclass(eq=False)
class ModuleApp:
    """The whole app (a worker and the ASGI server) shared by the tests of one module."""

    options: dict[str, Any]
    web: ChildProcess | None = None
    worker: ChildProcess | None = None
    url: str = ""
    starts: int = 0

    def ensure_running(self) -> str:
        # A test may have stopped or killed a process: the next one gets a fresh app.
        if self.web is None or self.worker is None or self._dead():
            self.stop()
            port = int(self.options.get("port", 0)) or free_port()
            self.url = f"http://127.0.0.1:{port}"
            sync_client().delete("replies", "default")
            self.worker = spawn(worker_command(4, name="moduleapp@%h"), self._env(worker=True))
            self.web = spawn(web_command("127.0.0.1", port), self._env())
            self.worker.wait_for_output(" ready.")
            self.web.wait_for_output("Uvicorn running")
            self.starts += 1
            RUNNING_MODULE_APPS.add(self)
        return self.url

    def restart_web(self) -> None:
        """Stop the ASGI server (every socket drops) and start it again on the same port."""
        assert self.web is not None
        self.web.stop()
        port = int(self.url.rsplit(":", 1)[1])
        self.web = spawn(web_command("127.0.0.1", port), self._env())
        self.web.wait_for_output("Uvicorn running")

    def _env(self, *, worker: bool = False) -> dict[str, str]:
        env = {
            "LLM_PROVIDER": "offline",
            "OFFLINE_WORD_DELAY_MS": str(self.options.get("word_delay_ms", 5)),
            "ALLOWED_ORIGINS": self.url,
        }
        env.update(
            {
                k: str(v)
                for k, v in self.options.items()
                if k not in ("word_delay_ms", "port", "demo_kb")
            }
        )
        return child_env(**env)

    def _dead(self) -> bool:
        return any(p is not None and p.process.poll() is not None for p in (self.web, self.worker))

    def stop(self) -> None:
        for child in (self.web, self.worker):
            if child is not None:
                child.stop()
        self.web = self.worker = None
        RUNNING_MODULE_APPS.discard(self)


RUNNING_MODULE_APPS: set[ModuleApp] = set()


@pytest.fixture(autouse=True)
def no_module_app_unless_asked(request: pytest.FixtureRequest) -> None:
    """A test that starts its own worker (another answerer, none at all) must not have the
    module's worker take its tasks from the shared queue."""
    if "offline_app" not in request.fixturenames:
        for app in list(RUNNING_MODULE_APPS):
            app.stop()


@pytest.fixture(scope="module")
def module_app_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The module's app: its OFFLINE_APP dict (word_delay_ms, port, demo_kb, and more of the
    server's environment). A module overrides this fixture for options known only at run
    time (a host page's address)."""
    return dict(getattr(request.module, "OFFLINE_APP", {}))


@pytest.fixture(scope="module")
def module_app(module_app_options: dict[str, Any], django_db_setup: None) -> Iterator[ModuleApp]:
    app = ModuleApp(module_app_options)
    yield app
    app.stop()


@pytest.fixture
def offline_app(module_app: ModuleApp, transactional_db: None) -> Iterator[str]:
    """The whole app with the offline answerer and the demo help articles, started once per
    module (its options: the module's OFFLINE_APP dict: word_delay_ms, port, and more of the
    server's environment) instead of once per test, which cost each browser test ~5 s.

    Each test still starts from an empty database and Redis namespace; before the next one
    its replies are left to finish, so that no task of this test touches the next one's rows.
    """
    from django.core.management import call_command

    url = module_app.ensure_running()
    if module_app.options.get("demo_kb", True):
        call_command("load_demo_kb", verbosity=0)
    yield url
    settle_replies()


def settle_replies(timeout: float = 15) -> None:
    """Wait until no bot reply is queued or streaming (a worker still writing one)."""
    from conversations.models import Turn

    unfinished = Turn.objects.filter(
        author=Turn.Author.BOT, status__in=[Turn.Status.QUEUED, Turn.Status.STREAMING]
    )
    deadline = time.monotonic() + timeout
    while unfinished.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# --- Browser ---------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One Debian Chromium per test module (module scope), closed with the module, so that its
    event loop is gone before the async tests of other modules run."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; `make test` should have installed it")
        pytest.skip("chromium is not installed (make test installs it when run as root)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while it is open;
    # the ORM calls of these tests and their database teardown are plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
