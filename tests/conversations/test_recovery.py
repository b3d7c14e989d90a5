"""Recovery without the broker's help (conversations/recovery.py): leases renewed while a reply
streams, the sweeper that re-queues replies nobody owns, the hand-off on shutdown, and a reply
that goes on through a Redis restart. Real processes and a real Redis server where the fault
is the point (tests/conversations/test_end_to_end.py kills and stops real workers)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.db import connection
from django.utils import timezone
from psycopg_pool import PoolTimeout

from conversations import recovery, replies, services
from conversations.events import ReplyPublisher
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from support_bot.redis_clients import key, sync_client
from tests.conftest import free_port, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The reply tasks the code under test sends, recorded instead of reaching a broker."""
    sent: list[int] = []
    monkeypatch.setattr(recovery, "queue_reply", sent.append)
    return sent


def ask(text: str = "Where is my parcel?") -> Turn:
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None
    return posted.reply


def frames_of(reply: Turn) -> list[dict]:
    return [json.loads(f["f"]) for _id, f in sync_client().xrange(key("reply", reply.pk))]


def streaming_since(reply: Turn, seconds_ago: float, attempt: int = 1) -> None:
    claimed_at = timezone.now() - timedelta(seconds=seconds_ago)
    streaming = {"status": "streaming", "attempt": attempt, "claimed_at": claimed_at}
    Turn.objects.filter(pk=reply.pk).update(**streaming)


@pytest.fixture
def host_clock(monkeypatch: pytest.MonkeyPatch):
    """Sets this process's clock off from the database's, as on a worker host whose clock is
    wrong (the database here runs on the same machine, so its clock is the true one)."""
    true_now = timezone.now

    def off_by(seconds: float) -> None:
        monkeypatch.setattr(timezone, "now", lambda: true_now() + timedelta(seconds=seconds))

    return off_by


# --- The sweeper ------------------------------------------------------------------------------


def test_the_sweeper_requeues_a_reply_whose_worker_stopped_renewing_its_lease(settings, queued):
    reply = ask()
    streaming_since(reply, settings.REPLY_LEASE_S + 1)
    assert recovery.sweep() == recovery.Swept(lapsed=1, stuck=0)
    reply.refresh_from_db()
    assert reply.status == "queued" and queued == [reply.pk]


def test_the_sweeper_leaves_a_reply_with_a_live_lease_alone(settings, queued):
    reply = ask()
    streaming_since(reply, settings.REPLY_LEASE_S - 2)
    assert recovery.sweep() == recovery.Swept()
    assert Turn.objects.get(pk=reply.pk).status == "streaming" and queued == []


def test_the_sweeper_requeues_a_reply_whose_task_was_lost_once_per_period(settings, queued):
    reply = ask()
    fresh = ask()
    lost_long_ago = timezone.now() - timedelta(seconds=settings.REPLY_REQUEUE_AFTER_S + 1)
    Turn.objects.filter(pk=reply.pk).update(created_at=lost_long_ago)
    assert recovery.sweep() == recovery.Swept(stuck=1)
    assert recovery.sweep() == recovery.Swept()  # its new task has a period to arrive
    assert queued == [reply.pk]
    assert Turn.objects.get(pk=fresh.pk).status == "queued"


def fields_of(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_a_claim_reads_the_reply_its_conversation_and_its_question_as_the_orm_does(
    django_assert_num_queries,
):
    reply = ask()
    # Values the ORM converts on the way in: JSON, a decimal, a time, a UUID.
    Turn.objects.filter(pk=reply.reply_to_id).update(sources=[{"n": 1, "title": "Refunds"}])
    Turn.objects.filter(pk=reply.pk).update(cost=Decimal("0.00012345"))
    Conversation.objects.filter(pk=reply.conversation_id).update(
        rating=4, rated_at=timezone.now(), contact_email="ada@example.com"
    )
    # PostgreSQL: one statement (UPDATE ... RETURNING joined); elsewhere the UPDATE, the SELECT.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        claimed = Turn.claim_reply(reply.pk, lease_s=60)
        assert claimed is not None
        conversation, question = claimed.conversation, claimed.reply_to
        assert question is not None and question.reply is claimed
    assert (claimed.status, claimed.attempt) == ("streaming", 1)

    read = Turn.objects.select_related("conversation", "reply_to").get(pk=reply.pk)
    assert fields_of(claimed) == fields_of(read)
    assert fields_of(conversation) == fields_of(read.conversation)
    assert fields_of(question) == fields_of(read.reply_to)
    assert Turn.claim_reply(reply.pk, lease_s=60) is None  # taken, its lease running


def test_workers_whose_clocks_differ_by_minutes_leave_each_others_live_replies_alone(
    settings, queued, host_clock
):
    reply = ask()
    host_clock(-120)  # the worker writing it is two minutes slow
    assert Turn.claim_reply(reply.pk, lease_s=settings.REPLY_LEASE_S) is not None
    keeper = recovery.LeaseKeeper()
    keeper._held[reply.pk] = recovery.HeldReply(reply.pk, attempt=1)
    keeper.renew()

    host_clock(+120)  # another worker, two minutes fast, sweeps and is asked for it again
    assert recovery.sweep() == recovery.Swept()
    assert Turn.claim_reply(reply.pk, lease_s=settings.REPLY_LEASE_S) is None

    reply.refresh_from_db()
    assert (reply.status, reply.attempt, queued) == ("streaming", 1, [])


def test_a_worker_whose_clock_is_slow_still_requeues_a_reply_whose_worker_died(
    settings, queued, host_clock
):
    reply = ask()
    streaming_since(reply, settings.REPLY_LEASE_S + 1)  # by the true clock
    host_clock(-120)
    assert recovery.sweep() == recovery.Swept(lapsed=1)
    assert queued == [reply.pk]


def test_a_requeued_reply_is_written_once_by_the_next_worker(model, settings, queued):
    reply = ask()
    streaming_since(reply, settings.REPLY_LEASE_S + 1)
    recovery.sweep()
    write_reply(reply.pk)
    write_reply(reply.pk)  # the original task, redelivered late
    reply.refresh_from_db()
    assert (reply.status, reply.attempt) == ("done", 2)
    assert len(model.requests()) == 1


def test_a_reply_every_worker_died_on_ends_with_the_apology(model, settings, queued):
    reply = ask()
    streaming_since(reply, settings.REPLY_LEASE_S + 1, attempt=settings.REPLY_MAX_CLAIMS)
    write_reply(reply.pk)
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("failed", "gave_up")
    assert model.requests() == []


# --- Leases and hand-off ----------------------------------------------------------------------


def start_writing(reply: Turn) -> threading.Thread:
    writer = threading.Thread(target=write_reply, args=(reply.pk,), daemon=True)
    writer.start()
    deadline = time.monotonic() + 10
    while not any(f["type"] == "reply.start" for f in frames_of(reply)):
        assert time.monotonic() < deadline, "the reply never started"
        time.sleep(0.05)
    return writer


def test_a_worker_renews_the_lease_of_the_reply_it_writes(model, settings):
    model.set_fault("hang", hang_s=1.5)  # the model takes 1.5 s to its first token
    reply = ask()
    writer = start_writing(reply)
    claimed_at = Turn.objects.get(pk=reply.pk).claimed_at
    time.sleep(0.2)
    recovery.keeper.renew()
    assert Turn.objects.get(pk=reply.pk).claimed_at > claimed_at
    writer.join(timeout=15)
    assert Turn.objects.get(pk=reply.pk).status == "done"


def test_a_heartbeat_renews_only_the_replies_still_in_the_attempt_this_worker_claimed(queued):
    mine, taken, finished = ask("one"), ask("two"), ask("three")
    for reply in (mine, taken, finished):
        streaming_since(reply, seconds_ago=3)
    keeper = recovery.LeaseKeeper()
    held = {}
    for reply in (mine, taken, finished):
        held[reply.pk] = recovery.HeldReply(reply.pk, attempt=1)
        keeper._held[reply.pk] = held[reply.pk]
    streaming_since(taken, seconds_ago=0, attempt=2)  # another worker claimed it since
    Turn.objects.filter(pk=finished.pk).update(status="done")
    before = {t.pk: t.claimed_at for t in Turn.objects.all()}

    keeper.renew()

    after = {t.pk: t.claimed_at for t in Turn.objects.all()}
    assert after[mine.pk] > before[mine.pk] and not held[mine.pk].is_lost
    assert after[taken.pk] == before[taken.pk] and held[taken.pk].is_lost
    # Finished by this worker's own writer just before the heartbeat: not renewed, not lost.
    assert after[finished.pk] == before[finished.pk] and not held[finished.pk].is_lost


def test_a_heartbeat_finds_a_reply_the_sweeper_put_back_lost(queued, caplog):
    reply = ask()
    streaming_since(reply, seconds_ago=10)
    keeper = recovery.LeaseKeeper()
    held = keeper._held[reply.pk] = recovery.HeldReply(reply.pk, attempt=1)
    assert recovery.sweep().lapsed == 1  # queued again, in the same attempt until claimed

    keeper.renew()

    assert held.is_lost
    assert [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]


def test_a_reply_claimed_after_a_wait_for_a_connection_starts_its_lease_once_claimed(
    monkeypatch,
):
    reply = ask()
    connect = connection.ensure_connection

    def pool_is_busy() -> None:
        if connection.connection is None:
            time.sleep(0.5)  # every pooled connection is with another thread
        connect()

    connection.close()
    monkeypatch.setattr(connection, "ensure_connection", pool_is_busy)
    asked_to_claim = timezone.now()

    claimed = Turn.claim_reply(reply.pk, lease_s=5)

    assert claimed is not None and claimed.status == "streaming"
    # SQLite's clock counts milliseconds.
    assert claimed.claimed_at >= asked_to_claim + timedelta(seconds=0.499)


def test_a_heartbeat_slow_enough_to_risk_the_leases_says_how_long_it_waited_for_a_connection(
    queued, settings, monkeypatch, caplog
):
    settings.REPLY_LEASE_S = 0.4  # a heartbeat of 0.2 s or more risks it
    reply = ask()
    streaming_since(reply, seconds_ago=0)
    keeper = recovery.LeaseKeeper()
    keeper._held[reply.pk] = recovery.HeldReply(reply.pk, attempt=1)
    keeper._sweep_from = time.monotonic() + 60  # only the renewal is timed
    connect = recovery.connection.ensure_connection

    def pool_is_busy() -> None:
        time.sleep(0.3)  # every pooled connection is with another thread
        connect()

    monkeypatch.setattr(recovery.connection, "ensure_connection", pool_is_busy)

    keeper.tick()

    (slow,) = [r.getMessage() for r in caplog.records if "heartbeat took" in r.getMessage()]
    assert "(0.3s waiting for a database connection)" in slow
    monkeypatch.undo()
    caplog.clear()
    keeper.tick()  # a quick one is not logged
    assert not [r for r in caplog.records if "heartbeat took" in r.getMessage()]


def late_ticks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "later than due" in r.getMessage()]


def hold_the_interpreter(seconds: float) -> None:
    """Keep the GIL for `seconds` of wall time, as a busy thread can: libc's usleep called
    through ctypes.PyDLL, which (unlike CDLL) does not release the GIL. A CPU-bound hog timed
    beforehand ran short whenever the machine was busy while it was timed."""
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))


def test_a_heartbeat_that_could_not_run_on_time_says_how_late_it_was(settings, caplog):
    settings.REPLY_HEARTBEAT_S = 0.05
    settings.REPLY_LEASE_S = 1.0  # late by 0.5 s or more risks it
    keeper = recovery.LeaseKeeper()
    keeper._sweep_from = time.monotonic() + 60
    keeper.start()
    try:
        time.sleep(0.3)
        assert not late_ticks(caplog)
        started = time.monotonic()
        hold_the_interpreter(1.5)
        held_for = time.monotonic() - started
        # The heartbeat's thread runs its late tick once it gets the interpreter back; on a busy
        # machine that can take a while, and stopping it first would leave nothing logged.
        deadline = time.monotonic() + 10
        while not late_ticks(caplog) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        keeper.stop()
    assert held_for >= 1.5
    (late,) = late_ticks(caplog)
    assert "leases lapse after 1s" in late


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a pool is the production path's")
def test_a_heartbeat_renews_leases_while_reply_threads_hold_every_pooled_connection(settings):
    settings.REPLY_HEARTBEAT_S = 0.1
    reply = ask()
    streaming_since(reply, seconds_ago=0)
    claimed_at = Turn.objects.get(pk=reply.pk).claimed_at  # this thread keeps its connection
    keeper = recovery.LeaseKeeper()
    keeper._held[reply.pk] = recovery.HeldReply(reply.pk, attempt=1)
    keeper._sweep_from = time.monotonic() + 60
    pool = connection.pool
    max_size = pool.max_size
    pool.resize(pool.min_size, pool.get_stats()["pool_size"])  # no more connections
    busy = []  # every connection the pool has, as reply threads would hold them
    try:
        while True:
            busy.append(pool.getconn(timeout=0.2))
    except PoolTimeout:
        pass
    try:
        keeper.start()
        renewed = False
        deadline = time.monotonic() + 3
        while not renewed and time.monotonic() < deadline:
            time.sleep(0.1)
            renewed = Turn.objects.get(pk=reply.pk).claimed_at > claimed_at
        assert renewed
    finally:
        keeper.stop()
        for held in busy:
            pool.putconn(held)
        pool.resize(pool.min_size, max_size)
    assert not keeper.held()[0].is_lost


def test_a_writer_whose_reply_was_taken_away_stops_and_stores_nothing(model, queued):
    model.set_fault("hang", hang_s=1.5)
    reply = ask()
    writer = start_writing(reply)
    assert recovery.requeue(reply.pk, reason="test")  # as the sweeper does when a lease lapses
    recovery.keeper.renew()  # the writer's process learns it at its next heartbeat
    writer.join(timeout=15)
    reply.refresh_from_db()
    assert (reply.status, reply.text) == ("queued", "")
    assert not any(f["type"] in ("reply.delta", "reply.done") for f in frames_of(reply))
    assert queued == [reply.pk]


def test_a_writer_that_loses_its_reply_while_preparing_it_sends_no_frame(
    model, queued, monkeypatch
):
    reply = ask()
    prepare = replies.request_for_reply

    def taken_away_meanwhile(*args, **kwargs):
        # Its lease lapsed under a slow retrieval: the sweeper put it back, and this worker's
        # heartbeat finds out before the request is ready.
        request = prepare(*args, **kwargs)
        assert recovery.requeue(reply.pk, reason="test")
        recovery.keeper.renew()
        return request

    monkeypatch.setattr(replies, "request_for_reply", taken_away_meanwhile)

    write_reply(reply.pk)

    assert frames_of(reply) == []  # the next attempt's reply.start is the first its page sees
    assert model.requests() == [] and queued == [reply.pk]


def test_a_stopping_worker_hands_its_streaming_replies_to_another_worker(model, queued):
    model.set_fault("hang", hang_s=1.5)
    reply = ask()
    writer = start_writing(reply)
    recovery.keeper.begin_shutdown(grace_s=0)
    try:
        assert recovery.keeper.hand_off_if_due() == 1
    finally:
        recovery.keeper._handoff_at = None  # the keeper is this process's: leave it as found
    writer.join(timeout=15)
    assert Turn.objects.get(pk=reply.pk).status == "queued" and queued == [reply.pk]
    write_reply(reply.pk)  # the worker it went to
    reply.refresh_from_db()
    frames = frames_of(reply)
    assert (reply.status, reply.attempt) == ("done", 2)
    assert [f["attempt"] for f in frames if f["type"] == "reply.start"] == [1, 2]
    assert reply_text(frames, reply.pk) == reply.text


def test_a_stopping_worker_keeps_its_replies_until_the_hand_off_is_due(model, queued):
    model.set_fault("hang", hang_s=1.5)
    reply = ask()
    writer = start_writing(reply)
    recovery.keeper.begin_shutdown(grace_s=60)
    try:
        assert recovery.keeper.hand_off_if_due() == 0
    finally:
        recovery.keeper._handoff_at = None
    writer.join(timeout=15)
    assert Turn.objects.get(pk=reply.pk).status == "done" and queued == []


# --- Redis going away mid-reply ---------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, to kill and restart (never the shared one)."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> redis.Redis:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        client = redis.Redis(port=port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill() -> None:
        processes[-1].kill()
        processes[-1].wait()

    yield start, kill
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_reply_goes_on_through_a_redis_restart_and_sends_its_text_again(own_redis):
    start, kill = own_redis
    client = start()
    reply = Turn.claim_reply(ask().pk, lease_s=5)
    assert reply is not None
    publisher = ReplyPublisher(reply)
    publisher.redis = client
    publisher.start()
    publisher.delta("Your parcel ")
    kill()
    assert publisher.delta("left our ") is True  # no error: the reply goes on
    start()  # empty: nothing persisted
    publisher.delta("warehouse.")
    log = [json.loads(f[b"f"]) for _id, f in client.xrange(key("reply", reply.pk))]
    assert [f["type"] for f in log] == ["reply.start", "reply.delta"]
    assert log[1]["text"] == "Your parcel left our warehouse."
    assert log[0]["seq"] > 2  # past what the page had: the page applies it (a start jumps gaps)


def test_the_keeper_counts_the_replies_its_worker_is_writing(settings):
    """What a worker's question lane reads to stay out of the way (knowledge/search/ahead.py)."""
    reply = Turn.claim_reply(ask().pk, lease_s=settings.REPLY_LEASE_S)
    assert reply is not None
    keeper = recovery.LeaseKeeper()
    with keeper.hold(reply):
        assert keeper.holding() == 1
    assert keeper.holding() == 0
