"""The production shape as files (no Docker engine runs on the CI machine, so these check the
compose file's promises statically), and the embedded default's SQLite mode."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import yaml
from django.db import connection

from tests.conftest import ROOT, TEST_PROCESS_POOL_SIZE


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_postgres_redis_two_web_processes_and_two_workers(compose):
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker"} <= set(services)
    web = services["web"]["command"]
    assert web[web.index("--workers") + 1] == "2"
    assert services["worker"]["deploy"]["replicas"] == 2
    worker = services["worker"]["command"]
    assert worker[worker.index("-P") + 1] == "threads"


def test_compose_queues_replies_on_rabbitmq_and_gives_workers_the_grace_they_hand_off_by(
    compose,
):
    services = compose["services"]
    assert services["web"]["environment"]["CELERY_BROKER_URL"].startswith(
        "amqp://"
    )
    assert "rabbitmq" in services["web"]["depends_on"]
    worker = services["worker"]
    grace = worker["stop_grace_period"]
    assert grace.endswith("s") and worker["environment"]["WORKER_SHUTDOWN_GRACE_S"] == grace[:-1]


def test_compose_configures_the_app_only_through_the_environment(compose):
    env = compose["x-app"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL", "OPENAI_MODEL"):
        assert name in env
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "no default secret may ship"
    assert env["DATABASE_URL"].startswith("postgres://")


def test_compose_and_the_image_serve_sockets_as_make_run_does(compose):
    from support_bot.processes import WEB_SOCKET_OPTIONS

    options = list(WEB_SOCKET_OPTIONS)
    command = compose["services"]["web"]["command"]
    assert any(command[i : i + len(options)] == options for i in range(len(command)))
    dockerfile = " ".join((ROOT / "Dockerfile").read_text().replace("\\\n", " ").split())
    assert ", ".join(f'"{o}"' for o in options) in dockerfile


async def test_the_web_server_declines_per_message_deflate_to_keep_idle_sockets_small(
    asgi_server,
):
    import websockets

    url = await asyncio.to_thread(asgi_server)
    async with websockets.connect(
        url.replace("http", "ws") + f"/ws/chat/{uuid.uuid4()}/", origin=url, compression="deflate"
    ) as socket:
        assert socket.response.headers.get("Sec-WebSocket-Extensions") is None


def test_the_image_collects_static_files_and_runs_as_a_normal_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "collectstatic --noinput" in dockerfile
    assert "\nUSER supportbot" in dockerfile


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="checks the embedded default only")
def test_sqlite_runs_in_wal_mode_with_immediate_transactions():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="checks the production path only")
def test_threads_share_a_bounded_pool_of_postgres_connections_and_wait_for_one():
    """200 reply threads once ran Postgres out of connections: each held its own. Now a
    process lends at most DATABASE_POOL_SIZE, and a thread waits while all are busy."""
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings
    from django.db import connections

    # The pool this process was given (tests/conftest.py enlarges the test process's).
    pool_size = connections["default"].settings_dict["OPTIONS"]["pool"]["max_size"]
    assert pool_size == settings.DATABASE_POOL_SIZE or pool_size == TEST_PROCESS_POOL_SIZE
    threads = pool_size + 15

    def hold_a_connection(_: int) -> int:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid(), pg_sleep(0.2)")
                return int(cursor.fetchone()[0])
        finally:
            connections["default"].close()  # back to the pool

    with ThreadPoolExecutor(max_workers=threads) as executor:
        backends = list(executor.map(hold_a_connection, range(threads)))
    assert len(backends) == threads  # every thread got its turn, none failed
    assert len(set(backends)) <= pool_size
