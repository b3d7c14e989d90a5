"""Prometheus metrics, read the way Prometheus reads them: /metrics behind its bearer token,
replies written against the fake model over real HTTP, sockets through the real ASGI stack,
queue depths from the real broker, and real worker and server processes for how each kind of
process is scraped (docs/operations.md, "Metrics")."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from django.test import AsyncClient, Client
from kombu import Connection, Exchange, Producer, Queue
from prometheus_client.parser import text_string_to_metric_families

from conversations import services, tasks
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from support_bot import metrics
from tests.conftest import free_port, open_chat, visitor_cookie_header
from tests.support_bot.test_readyz import rabbitmq_or_skip

TOKEN = "scrape-token-for-tests"
BEARER = f"Bearer {TOKEN}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client) -> Samples:
    response = client.get("/metrics", HTTP_AUTHORIZATION=BEARER)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


async def ascrape() -> Samples:
    response = await AsyncClient().get("/metrics", headers={"Authorization": BEARER})
    assert response.status_code == 200
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes (counters are per process, never reset)."""
    return value(after, name, **labels) - value(before, name, **labels)


def ask(text: str = "Where is my parcel?") -> Turn:
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, f"c-{uuid.uuid4().hex[:8]}", text)
    assert posted.reply is not None
    return posted.reply


# --- /metrics is not public ----------------------------------------------------------------


def test_it_refuses_metrics_without_the_bearer_token(client, settings):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": TOKEN}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_are_off_while_no_token_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer").status_code == 401


@pytest.mark.django_db
def test_it_serves_every_metric_to_the_bearer_of_the_token(client):
    metrics.record_requeued("lease_expired", 0)  # n=0 records nothing
    body = client.get("/metrics", HTTP_AUTHORIZATION=BEARER).content.decode()
    for name in (
        "supportbot_replies_in_flight",
        "supportbot_queue_messages",
        "# HELP supportbot_replies_total",
        "# HELP supportbot_reply_first_token_seconds",
        "# HELP supportbot_reply_duration_seconds",
        "# HELP supportbot_open_sockets",
        "# HELP supportbot_reply_retries_total",
        "# HELP supportbot_replies_requeued_total",
    ):
        assert name in body


# --- Replies ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_counts_a_reply_by_outcome_and_times_its_first_token_and_duration(client, model):
    before = scrape(client)
    reply = ask()
    write_reply(reply.pk)
    after = scrape(client)

    reply.refresh_from_db()
    assert reply.status == "done"

    done = {"status": "done", "error_code": "", "abstained": "false"}
    assert grown(before, after, "supportbot_replies_total", **done) == 1
    assert grown(before, after, "supportbot_reply_first_token_seconds_count") == 1
    first_token = grown(before, after, "supportbot_reply_first_token_seconds_sum")
    assert first_token == pytest.approx(reply.first_token_ms / 1000)
    assert grown(before, after, "supportbot_reply_duration_seconds_count", status="done") == 1
    duration = grown(before, after, "supportbot_reply_duration_seconds_sum", status="done")
    assert duration == pytest.approx(reply.duration_ms / 1000)
    assert value(after, "supportbot_replies_in_flight") == 0


@pytest.mark.django_db
def test_it_counts_a_failed_reply_with_its_error_code_and_each_retry_by_cause(
    client, model, settings
):
    settings.REPLY_MAX_ATTEMPTS = 3
    model.set_fault("500", times=-1)
    before = scrape(client)
    write_reply(ask().pk)
    after = scrape(client)

    failed = {"status": "failed", "error_code": "server_error", "abstained": "false"}
    assert grown(before, after, "supportbot_replies_total", **failed) == 1
    retries = {"kind": "provider", "cause": "server_error"}
    assert grown(before, after, "supportbot_reply_retries_total", **retries) == 2  # 3 attempts
    # No text was ever shown.
    assert grown(before, after, "supportbot_reply_first_token_seconds_count") == 0


@pytest.mark.django_db
def test_it_counts_a_reply_withdrawn_because_a_person_has_the_conversation(client, model):
    from conversations.escalation import escalate

    reply = ask()
    assert escalate(reply.conversation, "customer_request")
    before = scrape(client)
    write_reply(reply.pk)
    after = scrape(client)
    withdrawn = {"status": "withdrawn", "error_code": "", "abstained": "false"}
    assert grown(before, after, "supportbot_replies_total", **withdrawn) == 1
    assert model.requests() == []


@pytest.mark.django_db
def test_it_counts_a_task_retried_because_the_database_is_down(client, model):
    from celery.exceptions import Retry
    from django.db import DatabaseError

    reply = ask()
    before = scrape(client)

    def unreachable(*args, **kwargs):
        raise DatabaseError("connection refused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Turn, "claim_reply", classmethod(unreachable))
        with pytest.raises(Retry):
            tasks.generate_reply.apply(args=[reply.pk], throw=True)
    after = scrape(client)
    infrastructure = {"kind": "infrastructure", "cause": "database"}
    assert grown(before, after, "supportbot_reply_retries_total", **infrastructure) == 1


@pytest.mark.django_db
def test_it_counts_the_replies_the_sweeper_queues_again(client, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from conversations import recovery

    monkeypatch.setattr(recovery, "queue_reply", lambda reply_id: None)  # no broker needed
    lapsed = write_nothing_reply()
    lost = write_nothing_reply()
    long_ago = timezone.now() - timedelta(seconds=settings.REPLY_REQUEUE_AFTER_S + 1)
    Turn.objects.filter(pk=lapsed.pk).update(status="streaming", claimed_at=long_ago)
    Turn.objects.filter(pk=lost.pk).update(created_at=long_ago)
    before = scrape(client)
    recovery.sweep()
    after = scrape(client)
    for reason in ("lease_lapsed", "task_lost"):
        assert grown(before, after, "supportbot_replies_requeued_total", reason=reason) == 1


def write_nothing_reply() -> Turn:
    """A customer message and its reply, queued (no worker writes it here)."""
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, uuid.uuid4().hex, "Hello?")
    assert posted.reply is not None
    return posted.reply


# --- Sockets ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_open_socket_gauge_goes_up_and_down_with_chat_sockets(alice_conversation):
    before = value(await ascrape(), "supportbot_open_sockets", kind="chat")
    first = await open_chat(alice_conversation.pk, alice_conversation.customer)
    second = await open_chat(alice_conversation.pk, alice_conversation.customer)
    assert value(await ascrape(), "supportbot_open_sockets", kind="chat") == before + 2

    await first.disconnect()
    assert value(await ascrape(), "supportbot_open_sockets", kind="chat") == before + 1
    await second.disconnect()
    assert value(await ascrape(), "supportbot_open_sockets", kind="chat") == before


@pytest.mark.django_db(transaction=True)
async def test_a_socket_refused_after_accepting_is_counted_closed(alice_conversation):
    before = value(await ascrape(), "supportbot_open_sockets", kind="chat")
    stranger = await open_chat(alice_conversation.pk, None, expect_snapshot=False)
    refusal = await stranger.receive_json_from(timeout=5)
    assert refusal["code"] == "unauthenticated"
    assert (await stranger.receive_output(timeout=5))["type"] == "websocket.close"
    await stranger.disconnect()
    assert value(await ascrape(), "supportbot_open_sockets", kind="chat") == before


# --- Queue depth -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_reports_how_many_replies_wait_in_the_queue(client):
    before = value(scrape(client), "supportbot_queue_messages", queue="replies")
    # No worker runs: the tasks wait in the broker (under the project's key prefix on Redis).
    tasks.generate_reply.delay(0)
    tasks.generate_reply.delay(0)
    after = scrape(client)
    assert value(after, "supportbot_queue_messages", queue="replies") == before + 2
    assert ("supportbot_queue_messages", frozenset({("queue", "default")})) in after


@pytest.mark.django_db
def test_an_unreachable_broker_leaves_out_the_queue_depth_but_not_the_scrape(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    samples = scrape(client)
    assert not [name for name, _ in samples if name == "supportbot_queue_messages"]
    assert ("supportbot_replies_in_flight", frozenset()) in samples


def test_it_reads_the_queue_depth_from_rabbitmq_too(settings):
    settings.CELERY_BROKER_URL = rabbitmq_or_skip()
    queue_name = f"metrics-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name, auto_delete=False)
    # Publisher confirms: each publish returns once RabbitMQ has queued the message.
    confirmed = {"confirm_publish": True}
    with Connection(settings.CELERY_BROKER_URL, transport_options=confirmed) as conn:
        producer = Producer(conn.default_channel)
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue_name,
                             declare=[queue])  # fmt: skip
        try:
            (family,) = metrics.QueueDepthCollector((queue_name, "no-such-queue")).collect()
            depths = {s.labels["queue"]: s.value for s in family.samples}
            assert depths == {queue_name: 3, "no-such-queue": 0}
        finally:
            queue(conn.default_channel).delete()


# --- Each kind of process --------------------------------------------------------------------


def wait_for_status(reply_id: int, timeout: float = 30) -> Turn:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = Turn.objects.get(pk=reply_id)
        if reply.status in ("done", "failed"):
            return reply
        time.sleep(0.1)
    raise AssertionError(f"reply {reply_id} not finished within {timeout}s")


def http_scrape(url: str, token: str | None = None) -> Samples:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse(response.read().decode())


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_serves_its_own_metrics_on_METRICS_PORT(celery_worker):
    port = free_port()
    celery_worker(METRICS_PORT=str(port))
    reply = wait_for_status(ask().pk)
    assert reply.status == "done"

    samples = http_scrape(f"http://127.0.0.1:{port}/metrics")
    done = {"status": "done", "error_code": "", "abstained": str(reply.abstained).lower()}
    assert value(samples, "supportbot_replies_total", **done) == 1
    assert value(samples, "supportbot_reply_duration_seconds_count", status="done") == 1
    assert value(samples, "supportbot_replies_in_flight") == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_web_adds_up_its_processes_and_workers_sharing_a_multiprocess_dir(
    asgi_server, celery_worker, tmp_path
):
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    celery_worker(**shared)
    celery_worker(**shared)
    base = asgi_server(METRICS_TOKEN="web-token", **shared)
    replies = [ask(f"Where is my parcel number {n}?") for n in range(4)]
    finished = [wait_for_status(reply.pk) for reply in replies]
    assert {reply.status for reply in finished} == {"done"}

    samples = http_scrape(f"{base}/metrics", token="web-token")
    replies_total = [v for (name, _), v in samples.items() if name == "supportbot_replies_total"]
    assert sum(replies_total) == 4
    assert value(samples, "supportbot_reply_duration_seconds_count", status="done") == 4
    assert value(samples, "supportbot_replies_in_flight") == 0
    assert value(samples, "supportbot_queue_messages", queue="replies") == 0
    with pytest.raises(urllib.error.HTTPError) as refused:
        http_scrape(f"{base}/metrics")
    assert refused.value.code == 401


# --- docker-compose's Prometheus (no Docker engine here: the files' promises, statically) ----


def test_compose_starts_prometheus_under_a_profile_scraping_the_web_and_every_worker():
    import yaml

    from tests.conftest import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    services = compose["services"]
    prometheus, web, worker = services["prometheus"], services["web"], services["worker"]
    assert prometheus["profiles"] == ["metrics"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    # The web: both uvicorn processes through a multiprocess dir that starts empty, behind the
    # token the Prometheus service writes to the file its config reads.
    web_job = jobs["supportbot-web"]
    assert web_job["metrics_path"] == "/metrics"
    (target,) = web_job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in web["environment"]["ALLOWED_HOSTS"].split(",")
    assert port == web["command"][web["command"].index("--port") + 1]
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"] in web["tmpfs"]
    token_file = web_job["authorization"]["credentials_file"]
    assert f"> {token_file}" in prometheus["command"][0]
    assert "readyz" in web["healthcheck"]["test"][-1]

    # Every worker replica on its own METRICS_PORT, reachable on the compose network.
    (workers,) = jobs["supportbot-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert workers["port"] == int(worker["environment"]["METRICS_PORT"])
    assert worker["environment"]["METRICS_HOST"] == "0.0.0.0"  # noqa: S104 (inside its container)
    assert "ports" not in worker  # never published


@pytest.mark.django_db(transaction=True)
def test_a_web_process_killed_with_sockets_open_stops_counting_them_once_another_starts(
    asgi_server, alice_conversation, tmp_path
):
    from websockets.sync.client import connect

    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "METRICS_TOKEN": "web-token"}
    base = asgi_server(**env)
    port = base.rsplit(":", 1)[1]
    with connect(
        f"ws://127.0.0.1:{port}/ws/chat/{alice_conversation.pk}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": visitor_cookie_header(alice_conversation.customer).decode()},
    ) as socket:
        assert '"conversation"' in socket.recv(timeout=10)
        samples = http_scrape(f"{base}/metrics", "web-token")
        assert value(samples, "supportbot_open_sockets", kind="chat") == 1
        (server,) = asgi_server.started
        server.stop(sig=9)  # no chance to count its socket closed: its gauge file stays behind
    base = asgi_server(port=int(port), **env)
    samples = http_scrape(f"{base}/metrics", "web-token")
    assert value(samples, "supportbot_open_sockets", kind="chat") == 0
