"""The configuration cache (support_bot/config_cache.py): a customer message and a bot reply
read no configuration rows (escalation rules, business hours, prompt versions, experiments,
prices) while nothing changed; a change committed anywhere applies from the next message in
every process; with Redis unreachable, configuration comes from the database.

Changes are made inside django_capture_on_commit_callbacks(execute=True): the test's
transaction never commits, and that runs what a commit runs (the bump of the generation)."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from decimal import Decimal

import pytest
import redis
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from bot import config as bot_config
from conversations import services, tasks
from conversations.business_hours import availability, business_hours, support_zone
from conversations.escalation import escalation_for_message, escalation_rules, phrase_rules
from conversations.models import BusinessHours, Conversation, Customer, EscalationRule, Turn
from conversations.replies import write_reply
from studio import ab, experiments, runtime
from studio import services as studio_services
from studio.models import ModelPrice
from support_bot import config_cache
from support_bot.redis_clients import sync_client
from tests import personas
from tests.conftest import free_port
from tests.fixtures_kb import parcels_article

pytestmark = pytest.mark.django_db

olivia_operator = personas.olivia_operator

CONFIG_TABLES = (
    "conversations_escalationrule",
    "conversations_businesshours",
    "studio_promptversion",
    "studio_experiment",
    "studio_modelprice",
)


def config_reads(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in captured.captured_queries if any(t in q["sql"] for t in CONFIG_TABLES)
    ]


class CaptureConfigReads:
    """Counts the queries of configuration tables in a block."""

    def __enter__(self) -> CaptureConfigReads:
        self._context = CaptureQueriesContext(connection)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)
        self.count = len(config_reads(self._context))


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run what a commit runs for the changes made in the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def offline(settings, monkeypatch, committed) -> None:
    """The offline answerer and one help article that answers the questions asked here; replies
    are written by the test, not queued."""
    settings.LLM_PROVIDER = "offline"
    settings.OFFLINE_WORD_DELAY_MS = 0
    monkeypatch.setattr(tasks.generate_reply, "delay", lambda reply_id: None)
    parcels_article()
    with committed():
        EscalationRule.objects.create(kind="handoff_phrase", pattern="speak * human")
        EscalationRule.objects.create(kind="abstain_streak", threshold=2)


def post(conversation: Conversation, text: str) -> services.PostedMessage:
    return services.post_customer_message(conversation, uuid.uuid4().hex, text)


def new_conversation() -> Conversation:
    return Conversation.objects.create(customer=Customer.objects.create())


def warmed_conversation() -> Conversation:
    """A conversation with one answered message: the process has loaded its configuration."""
    conversation = new_conversation()
    write_reply(post(conversation, "Where is my parcel?").reply.pk)
    return conversation


# --- Queries per message and per reply ----------------------------------------------------------


def test_it_stores_a_customer_message_without_reading_configuration(
    offline, django_assert_max_num_queries
):
    conversation = warmed_conversation()
    # Before the cache: 8 (the enabled escalation rules were read for every message).
    with django_assert_max_num_queries(7) as captured:
        posted = post(conversation, "Do you ship to Norway?")
    assert posted.reply is not None and config_reads(captured) == []
    # The rules still apply.
    assert post(conversation, "Can I speak to a real human?").reply is None


def written_without_reading_configuration(conversation, django_assert_max_num_queries) -> Turn:
    """A reply to "Do you ship to Norway?", written in at most 5 queries, none of them reading
    configuration; as stored."""
    reply = post(conversation, "Do you ship to Norway?").reply
    with django_assert_max_num_queries(5) as captured:
        write_reply(reply.pk)
    assert config_reads(captured) == []
    reply.refresh_from_db()
    return reply


def test_it_writes_a_reply_without_reading_configuration(offline, django_assert_max_num_queries):
    conversation = warmed_conversation()
    # Before the cache: 8 (the running experiment, the active version and the price of the
    # model were read for every reply).
    reply = written_without_reading_configuration(conversation, django_assert_max_num_queries)
    assert reply.status == "done" and "Norway" in reply.text and reply.prompt_version is None


def test_it_writes_a_reply_with_an_active_version_and_a_price_without_reading_them(
    offline, committed, django_assert_max_num_queries
):
    with committed():
        version = studio_services.create_draft(by=None, name="Offline", provider="offline")
        studio_services.publish(version, by=None)
        studio_services.activate(version, by=None, allow_worse=True)
        ModelPrice.objects.create(
            model="offline-bm25", input_per_million=Decimal(1), output_per_million=Decimal(2)
        )
    conversation = warmed_conversation()
    # Before the cache: 8, as without a version.
    reply = written_without_reading_configuration(conversation, django_assert_max_num_queries)
    assert reply.status == "done" and reply.prompt_version == version
    expected = (reply.prompt_tokens * 1 + reply.completion_tokens * 2) / Decimal(10**6)
    assert reply.cost == expected > 0


def test_it_hands_over_after_abstaining_without_reading_configuration(
    offline, django_assert_max_num_queries
):
    conversation = warmed_conversation()
    business_hours()  # as after any earlier handover in this process
    write_reply(post(conversation, "What colour is the moon?").reply.pk)
    reply = post(conversation, "And on Tuesdays?").reply
    # Before the cache: 14 (the experiment, the version, the abstain-streak rule and the
    # business hours for the notice).
    with django_assert_max_num_queries(10) as captured:
        write_reply(reply.pk)
    assert config_reads(captured) == []
    conversation.refresh_from_db()
    assert (conversation.status, conversation.escalation_reason) == ("pending", "abstained")


# --- Changes apply from the next message ------------------------------------------------------


def test_it_reloads_when_another_process_announces_a_change(committed):
    with committed():
        EscalationRule.objects.create(kind="keyword", pattern="lawyer")
    assert "keyword" in phrase_rules()
    # Another process's commit: this process gets no signal, only the bump in Redis.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE conversations_escalationrule SET enabled = %s WHERE pattern = %s",
            [False, "lawyer"],
        )

    assert "keyword" in phrase_rules()  # cached until the generation changes
    sync_client().incr(config_cache.generation_key())
    assert "keyword" not in phrase_rules()


def _edit_rule() -> None:
    rule = EscalationRule.objects.get(pattern="lawyer")
    rule.pattern = "attorney"
    rule.save()


def _disable_rules() -> None:
    EscalationRule.objects.filter(pattern="lawyer").update(enabled=False)


def _delete_rule() -> None:
    EscalationRule.objects.get(pattern="lawyer").delete()


@pytest.mark.parametrize("change", [_edit_rule, _disable_rules, _delete_rule])
def test_it_applies_a_committed_rule_change_to_the_next_message(committed, change):
    with committed():
        EscalationRule.objects.create(kind="keyword", pattern="lawyer")
    conversation = new_conversation()
    escalation_for_message(conversation, "warm-up")
    with CaptureConfigReads() as reads:
        assert escalation_for_message(conversation, "my lawyer") == "keyword"
    assert reads.count == 0  # served from the cache

    with committed():
        change()

    assert escalation_for_message(conversation, "my lawyer") is None


def test_it_applies_a_committed_activation_and_rollback_to_the_next_reply(committed):
    with committed():
        first = studio_services.create_draft(by=None, name="First")
        second = studio_services.create_draft(by=None, name="Second")
        for version in (first, second):
            studio_services.publish(version, by=None)
        studio_services.activate(first, by=None, allow_worse=True)
    assert bot_config.for_conversation(None).version_id == first.pk
    with CaptureConfigReads() as reads:
        assert bot_config.for_conversation(None).version_id == first.pk
    assert reads.count == 0

    with committed():  # activation changes rows with QuerySet.update: no model signals
        studio_services.activate(second, by=None, allow_worse=True)
    assert bot_config.for_conversation(None).version_id == second.pk

    with committed():
        studio_services.rollback(by=None)
    assert bot_config.for_conversation(None).version_id == first.pk


def test_it_applies_a_started_and_a_stopped_experiment_to_the_next_reply(
    committed, olivia_operator
):
    with committed():
        a = studio_services.create_draft(by=None, name="A")
        b = studio_services.create_draft(by=None, name="B")
        for version in (a, b):
            studio_services.publish(version, by=None)
        studio_services.activate(a, by=None, allow_worse=True)
    assert experiments.running_experiment() is None
    with CaptureConfigReads() as reads:
        assert experiments.running_experiment() is None
    assert reads.count == 0

    with committed():
        experiment = ab.start_experiment(b, 99, olivia_operator)
    assert experiments.running_experiment() == experiment
    conversation = new_conversation()
    assert runtime.version_for(conversation.pk) in (a, b)

    with committed():
        ab.stop_experiment(experiment, olivia_operator)
    assert experiments.running_experiment() is None
    assert runtime.version_for(new_conversation().pk) == a


def test_it_applies_committed_business_hours_and_prices_at_once(committed):
    monday_8am = datetime(2026, 11, 30, 8, 0, tzinfo=support_zone())
    assert availability(monday_8am).open_now  # no hours: always open
    assert bot_config.cost_of("fake-model", 1_000_000, 0) == 0
    with CaptureConfigReads() as reads:
        availability(monday_8am)
        bot_config.cost_of("fake-model", 1, 1)
    assert reads.count == 0

    with committed():
        BusinessHours.objects.create(weekday=0, opens=time(9), closes=time(17))
        price = ModelPrice.objects.create(
            model="fake-model", input_per_million=Decimal(2), output_per_million=Decimal(8)
        )
    assert not availability(monday_8am).open_now
    assert bot_config.cost_of("fake-model", 1_000_000, 0) == 2

    with committed():
        price.input_per_million = Decimal(3)
        price.save()
    assert bot_config.cost_of("fake-model", 1_000_000, 0) == 3


def test_it_sees_its_own_uncommitted_change_and_caches_nothing_of_a_rolled_back_one(committed):
    conversation = new_conversation()
    with committed():
        EscalationRule.objects.create(kind="keyword", pattern="lawyer")
    assert escalation_for_message(conversation, "my lawyer, my barrister") == "keyword"

    with pytest.raises(RuntimeError), transaction.atomic():
        EscalationRule.objects.create(kind="handoff_phrase", pattern="barrister")
        # Its own change applies at once...
        assert escalation_for_message(conversation, "my barrister") == "customer_request"
        raise RuntimeError("rolled back")

    with CaptureConfigReads() as reads:
        assert escalation_for_message(conversation, "my barrister") is None
    assert reads.count == 0  # ...and the entry cached before it is still the one served


# --- Redis round trips: one a unit of work -----------------------------------------------------


@pytest.fixture
def generation_reads(monkeypatch) -> list[str]:
    """Every GET of the generation from here on, by any Redis client of this process."""
    reads: list[str] = []
    get = redis.Redis.get

    def counted(self, name, *args, **kwargs):
        if name == config_cache.generation_key():
            reads.append(name)
        return get(self, name, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "get", counted)
    return reads


def test_a_reply_written_by_a_worker_reads_the_generation_once(offline, generation_reads):
    conversation = warmed_conversation()
    business_hours()  # as after any earlier handover in this process
    write_reply(post(conversation, "What colour is the moon?").reply.pk)
    reply = post(conversation, "And on Tuesdays?").reply
    generation_reads.clear()

    # The experiment, the version, the price, the abstain-streak rule and the business hours
    # for the notice: one GET each before units of work.
    with CaptureConfigReads() as reads:
        tasks.generate_reply.apply(args=[reply.pk])
    assert len(generation_reads) == 1 and reads.count == 0
    conversation.refresh_from_db()
    assert conversation.escalation_reason == "abstained"

    escalation_rules()  # the task's unit of work is over: a read outside asks again
    assert len(generation_reads) == 2


def test_a_customer_message_reads_the_generation_once(offline, generation_reads):
    conversation = warmed_conversation()
    business_hours()
    generation_reads.clear()

    with CaptureConfigReads() as reads:
        post(conversation, "I want to talk to a human")  # rules, then hours for the notice

    assert len(generation_reads) == 1 and reads.count == 0
    conversation.refresh_from_db()
    assert conversation.escalation_reason == "customer_request"


def change_in_another_process(*, enabled: bool, pattern: str | None = None) -> None:
    """A change committed by another process: this one gets no signal, only the bump."""
    with connection.cursor() as cursor:
        if pattern is None:
            cursor.execute("UPDATE conversations_escalationrule SET enabled = %s", [enabled])
        else:
            cursor.execute(
                "UPDATE conversations_escalationrule SET enabled = %s WHERE pattern = %s",
                [enabled, pattern],
            )
    sync_client().incr(config_cache.generation_key())


def test_another_process_change_applies_from_the_next_unit_of_work(committed, monkeypatch):
    with committed():
        EscalationRule.objects.create(kind="keyword", pattern="lawyer")
        EscalationRule.objects.create(kind="keyword", pattern="barrister")
    conversation = new_conversation()

    with config_cache.unit_of_work():
        assert escalation_for_message(conversation, "my lawyer") == "keyword"
        change_in_another_process(enabled=False, pattern="lawyer")
        # The unit goes on with the configuration it began with...
        assert escalation_for_message(conversation, "my lawyer") == "keyword"
    # ...and the next one has the change.
    with config_cache.unit_of_work():
        assert escalation_for_message(conversation, "my lawyer") is None

        # A change made in this process applies at once.
        with committed():
            EscalationRule.objects.filter(pattern="barrister").update(enabled=False)
        assert escalation_for_message(conversation, "my barrister") is None

        # A unit that goes on for longer than UNIT_MAX_S asks Redis again.
        change_in_another_process(enabled=True)
        monkeypatch.setattr(config_cache, "UNIT_MAX_S", 0.0)
        assert escalation_for_message(conversation, "my lawyer") == "keyword"


# --- Redis unreachable ---------------------------------------------------------------------------


def test_it_reads_configuration_from_the_database_while_redis_is_unreachable(
    monkeypatch, committed, caplog
):
    with committed():
        rule = EscalationRule.objects.create(kind="keyword", pattern="lawyer")
    conversation = new_conversation()
    assert escalation_for_message(conversation, "my lawyer") == "keyword"  # cached
    monkeypatch.setattr(
        config_cache, "cache", config_cache.ConfigCache(f"redis://127.0.0.1:{free_port()}/0")
    )

    with CaptureConfigReads() as reads:
        assert escalation_for_message(conversation, "my lawyer") == "keyword"
    assert reads.count == 1
    assert "Redis unreachable: reading configuration from the database" in caplog.text

    with committed():  # the bump fails: logged, and the change is saved all the same
        rule.pattern = "attorney"
        rule.save()
    assert "configuration changed but Redis is unreachable" in caplog.text
    with connection.cursor() as cursor:  # another process's change: no signal, no bump
        cursor.execute("UPDATE conversations_escalationrule SET enabled = %s", [False])
    with CaptureConfigReads() as reads:
        assert escalation_for_message(conversation, "my attorney") is None
    assert reads.count == 1
