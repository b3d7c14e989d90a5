"""/readyz: the database, Redis and the Celery broker, each checked for real with a short
timeout; 503 naming the part that doesn't answer, in JSON, never a traceback."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.django_db

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def rabbitmq_or_skip() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("RabbitMQ is not running on 127.0.0.1:5672")
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    return RABBITMQ_URL


def test_it_is_ready_when_the_database_redis_and_the_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "broker": "ok"},
    }
    assert "no-cache" in response["Cache-Control"]


def test_it_answers_503_naming_redis_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"] == "unreachable (ConnectionError)"
    assert body["checks"]["database"] == body["checks"]["broker"] == "ok"


def test_it_answers_503_naming_the_broker_when_the_broker_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"] == "unreachable (OperationalError)"
    assert checks["database"] == checks["redis"] == "ok"


def test_a_server_that_never_answers_fails_the_check_within_its_timeout(
    client, settings, silent_server
):
    settings.PROBE_TIMEOUT_S = 0.5
    settings.REDIS_URL = f"redis://127.0.0.1:{silent_server}/0"
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "unreachable (TimeoutError)"


def test_it_checks_a_rabbitmq_broker_as_well(client, settings):
    settings.CELERY_BROKER_URL = rabbitmq_or_skip()
    assert client.get("/readyz").json()["checks"]["broker"] == "ok"

    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unreachable (OperationalError)"


def test_healthz_stays_the_liveness_check(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_healthz_answers_while_the_database_and_redis_are_away(
    client, settings, django_assert_num_queries
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # /readyz says 503 here

    with django_assert_num_queries(0):
        response = client.get("/healthz")

    assert response.status_code == 200
    assert client.get("/readyz").status_code == 503
