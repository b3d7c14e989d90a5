"""A/B experiments: sticky assignment, the statistics on known data, per-arm metrics from seeded
conversations, the start/stop/promote workflows and who may run them in the admin."""

from __future__ import annotations

import math
import uuid
import warnings
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Conversation, Customer, Turn
from studio import ab, statistics
from studio.experiments import arm_for, bucket
from studio.models import Activation, Experiment, ExperimentAssignment, PromptVersion
from tests import personas

alice_agent = personas.alice_agent
olivia_operator = personas.olivia_operator


@pytest.fixture
def versions(db: None) -> tuple[PromptVersion, PromptVersion]:
    a = PromptVersion.objects.create(
        name="Friendly", system_prompt="Be friendly.", state="published", is_active=True
    )
    b = PromptVersion.objects.create(name="Brief", system_prompt="Be brief.", state="published")
    return a, b


@pytest.fixture
def experiment(versions: tuple[PromptVersion, PromptVersion]) -> Experiment:
    a, b = versions
    return Experiment.objects.create(name="Brief vs friendly", version_a=a, version_b=b)


def conversations(n: int) -> list[Conversation]:
    customer = Customer.objects.create(display_name="Seeded")
    return Conversation.objects.bulk_create(Conversation(customer=customer) for _ in range(n))


def assign(experiment: Experiment, arm: str, conversation: Conversation) -> None:
    version = experiment.version_b if arm == "b" else experiment.version_a
    ExperimentAssignment.objects.create(
        experiment=experiment, conversation=conversation, arm=arm, version=version
    )


def bot_turn(conversation: Conversation, prompt: Any, completion: Any, cost: Any, ms: Any) -> Turn:
    return Turn(
        conversation=conversation,
        author=Turn.Author.BOT,
        status=Turn.Status.DONE,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=None if cost is None else Decimal(cost),
        first_token_ms=ms,
    )


def seed(experiment: Experiment, arm: str, n: int, escalated: int = 0, rating: int = 0) -> None:
    """n conversations in the arm, the first `escalated` of them escalated after assignment,
    each with one bot reply of 100 tokens; rated `rating` when given."""
    later = timezone.now() + timedelta(minutes=5)
    batch = conversations(n)
    ExperimentAssignment.objects.bulk_create(
        ExperimentAssignment(
            experiment=experiment,
            conversation=c,
            arm=arm,
            version=experiment.version_b if arm == "b" else experiment.version_a,
        )
        for c in batch
    )
    Turn.objects.bulk_create(bot_turn(c, 80, 20, "0.001", 900) for c in batch)
    Conversation.objects.filter(pk__in=[c.pk for c in batch[:escalated]]).update(escalated_at=later)
    if rating:
        Conversation.objects.filter(pk__in=[c.pk for c in batch]).update(rating=rating)


# --- Assignment ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_keeps_a_conversation_in_its_arm_even_after_the_percent_changes(experiment):
    batch = conversations(60)
    first = {c.pk: arm_for(c.pk) for c in batch}
    for c in batch:  # decided by the hash of experiment and conversation
        expected = "b" if bucket(experiment.pk, c.pk) < 50 else "a"
        assert first[c.pk] == (experiment.version_b if expected == "b" else experiment.version_a)
    assert {v.pk for v in first.values() if v} == {experiment.version_a.pk, experiment.version_b.pk}
    for percent in (99, 1):
        Experiment.objects.filter(pk=experiment.pk).update(percent_b=percent)
        assert {c.pk: arm_for(c.pk) for c in batch} == first
    assert ExperimentAssignment.objects.count() == 60
    # A new conversation follows the new percentage (1 % to B).
    newcomers = conversations(40)
    assert sum(arm_for(c.pk) == experiment.version_b for c in newcomers) <= 3


def test_it_splits_conversations_by_the_percentage():
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"conversation-{i}") for i in range(2000)]
    for experiment_id, percent in ((1, 50), (7, 30), (12, 10)):
        in_b = sum(bucket(experiment_id, i) < percent for i in ids)
        expected = 2000 * percent / 100
        sd = math.sqrt(2000 * percent / 100 * (1 - percent / 100))
        assert abs(in_b - expected) <= 4 * sd, (percent, in_b)


@pytest.mark.django_db
def test_it_gives_no_arm_once_the_experiment_stopped(experiment, olivia_operator):
    assigned, fresh = conversations(2)
    assert arm_for(assigned.pk) is not None
    ab.stop_experiment(experiment, olivia_operator, "done")
    assert arm_for(assigned.pk) is None
    assert arm_for(fresh.pk) is None
    assert not ExperimentAssignment.objects.filter(conversation=fresh).exists()


# --- Statistics on known data --------------------------------------------------------------


def test_it_computes_the_wilson_interval_of_a_known_proportion():
    low, high = statistics.wilson(20, 100)
    assert (round(low, 3), round(high, 3)) == (0.133, 0.289)
    assert statistics.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # z² / (n + z²)
    assert statistics.wilson(0, 0) == (0.0, 1.0)
    assert statistics.wilson(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)  # n / (n + z²)


def test_it_calls_a_difference_in_rates_only_when_it_is_clear():
    less = ab.compare_proportions("escalation", 40, 200, 20, 200)
    assert less.verdict == "B escalates less (10% vs 20%), 95% confidence"
    assert less.significant and less.b_better and less.high is not None and less.high < 0
    assert less.p_value is not None and less.p_value < 0.01
    more = ab.compare_proportions("escalation", 20, 200, 40, 200)
    assert more.verdict.startswith("B escalates more") and more.b_better is False
    resolves = ab.compare_proportions("resolution", 20, 200, 40, 200)
    assert resolves.verdict.startswith("B resolves more without a human") and resolves.b_better
    unclear = ab.compare_proportions("escalation", 20, 100, 12, 100)  # p = 0.12
    assert unclear.verdict == "No clear difference in escalation rate yet (12% vs 20%)"
    assert not unclear.significant
    few = ab.compare_proportions("escalation", 5, 12, 0, 9)
    assert few.verdict == "Not enough data yet (12 and 9 conversations)"
    rare = ab.compare_proportions("escalation", 2, 40, 1, 40)
    assert rare.verdict == "Not enough data yet (2 and 1 events)" and not rare.enough_data


def test_it_computes_welchs_interval_on_known_samples():
    # se 1, df 8, t(0.975, 8) = 2.306004
    result = statistics.welch([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])
    assert result.difference == 2 and result.df == pytest.approx(8)
    assert (result.low, result.high) == (
        pytest.approx(-0.306004, abs=1e-6),
        pytest.approx(4.306004, abs=1e-6),
    )
    assert result.p_value == pytest.approx(0.080516, abs=1e-5)
    assert statistics.t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-6)
    assert statistics.t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-5)
    # Unequal variances: Welch-Satterthwaite degrees of freedom.
    unequal = statistics.welch([10, 12, 14, 16], [1, 2, 3, 4, 5, 6, 7, 8])
    assert unequal.df == pytest.approx(
        (20 / 12 + 6 / 8) ** 2 / ((20 / 12) ** 2 / 3 + (6 / 8) ** 2 / 7)
    )
    csat = ab.compare_means("csat", [4.0, 5.0] * 20, [3.0, 4.0] * 20, 40, 40, decimals=1)
    assert csat.verdict == "B is rated lower (3.5 vs 4.5), 95% confidence" and not csat.b_better
    same = ab.compare_means("csat", [4.0, 5.0] * 20, [5.0, 4.0] * 20, 40, 40, decimals=1)
    assert same.verdict == "No clear difference in csat yet (4.5 vs 4.5)"
    assert ab.compare_means("csat", [4.0] * 5, [5.0] * 5, 40, 40).verdict == (
        "Not enough data yet (5 and 5 ratings)"
    )


def test_it_computes_welchs_interval_without_a_warning_when_an_arm_has_no_spread():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "nearly identical data" warning is silenced
        result = statistics.welch([5.0] * 10, [float(v) for v in range(1, 11)])
    half = 2.262157 * math.sqrt(55 / 6 / 10)  # t(0.975, 9) * se, var(1..10) = 55/6
    assert result.difference == 0.5 and result.df == pytest.approx(9)
    assert (result.low, result.high) == (
        pytest.approx(0.5 - half, abs=1e-5),
        pytest.approx(0.5 + half, abs=1e-5),
    )
    # No spread in either arm: the difference is exact.
    exact = statistics.welch([4.0] * 10, [5.0] * 10)
    assert (exact.difference, exact.low, exact.high, exact.p_value) == (1.0, 1.0, 1.0, 0.0)


# --- Metrics from seeded conversations -------------------------------------------------------


@pytest.mark.django_db
def test_it_measures_each_arm_from_its_conversations_and_bot_replies(experiment, versions):
    now = timezone.now()
    c1, c2, c3, c4, c5, c6 = conversations(6)
    for c, arm in ((c1, "a"), (c2, "a"), (c3, "a"), (c4, "a"), (c5, "b"), (c6, "b")):
        assign(experiment, arm, c)
    Turn.objects.bulk_create(
        [
            bot_turn(c1, 100, 20, "0.001", 1000),
            bot_turn(c1, 50, 10, "0.0005", 3000),
            bot_turn(c2, 80, 20, "0.002", 2000),
            bot_turn(c3, 40, 10, None, 500),  # a model without a price costs nothing
            bot_turn(c4, None, None, None, None),  # still queued
            # Only bot replies count.
            Turn(conversation=c3, author=Turn.Author.CUSTOMER, text="hi", prompt_tokens=999),
            bot_turn(c5, 30, 10, "0.0001", 400),
            bot_turn(c6, 20, 5, "0.00005", 600),
            Turn(conversation=c6, author=Turn.Author.AGENT, text="A person wrote."),
        ]
    )
    later, earlier = now + timedelta(minutes=5), now - timedelta(days=1)
    Conversation.objects.filter(pk=c1.pk).update(escalated_at=later, rating=2)
    resolved = {"status": "resolved", "resolved_at": later}
    Conversation.objects.filter(pk=c2.pk).update(rating=5, **resolved)
    Conversation.objects.filter(pk=c3.pk).update(
        assignee=User.objects.create(username="x"), **resolved
    )
    Conversation.objects.filter(pk=c4.pk).update(escalated_at=earlier)  # before the experiment
    Conversation.objects.filter(pk=c5.pk).update(rating=4, **resolved)
    Conversation.objects.filter(pk=c6.pk).update(**resolved)  # an agent wrote in it
    # A conversation of another (older) experiment doesn't count.
    older = Experiment.objects.create(
        name="old", version_a=versions[0], version_b=versions[1], status="stopped"
    )
    (other,) = conversations(1)
    assign(older, "a", other)
    Conversation.objects.filter(pk=other.pk).update(escalated_at=later)

    report = ab.metrics(experiment)
    a, b = report.a, report.b
    assert (a.conversations, a.escalated, a.resolved_without_human) == (4, 1, 1)
    assert (a.escalation_rate, a.resolution_rate, a.csat) == (0.25, 0.25, 3.5)
    assert a.tokens_per_conversation == 82.5  # (180 + 100 + 50 + 0) / 4
    assert a.cost_per_conversation == pytest.approx(0.000875)  # (0.0015 + 0.002) / 4
    assert (a.latency_median, a.latency_p90) == (1500, pytest.approx(2700))
    assert (b.conversations, b.escalated, b.resolved_without_human) == (2, 0, 1)
    assert (b.csat, b.tokens_per_conversation) == (4.0, 32.5)
    assert b.cost_per_conversation == pytest.approx(0.000075)
    assert (b.latency_median, b.latency_p90) == (500, pytest.approx(580))
    for comparison in report.comparisons.values():
        assert comparison.verdict == "Not enough data yet (4 and 2 conversations)"
    assert report.recommendation.startswith("Not enough data yet (4 and 2 conversations")


@pytest.mark.django_db
def test_it_gives_a_plain_words_verdict_and_recommendation_on_seeded_arms(experiment):
    seed(experiment, "a", 40, escalated=12, rating=4)
    seed(experiment, "b", 40, escalated=2, rating=4)
    report = ab.metrics(experiment)
    assert report.comparisons["escalation"].verdict == (
        "B escalates less (5% vs 30%), 95% confidence"
    )
    assert report.comparisons["csat"].verdict == "No clear difference in csat yet (4.00 vs 4.00)"
    assert report.recommendation == "B is better on escalation rate and worse on none: promote B."


@pytest.mark.django_db
def test_it_reads_the_metrics_in_a_fixed_number_of_queries(experiment):
    seed(experiment, "a", 3, escalated=1)
    seed(experiment, "b", 3)
    experiment = Experiment.objects.select_related("version_a", "version_b").get(pk=experiment.pk)
    with CaptureQueriesContext(connection) as few:
        ab.metrics(experiment)
    seed(experiment, "a", 40, escalated=5)
    seed(experiment, "b", 40)
    with CaptureQueriesContext(connection) as many:
        report = ab.metrics(experiment)
    assert report.a.conversations == 43
    assert len(many.captured_queries) == len(few.captured_queries) <= 3


# --- Workflows and permissions ---------------------------------------------------------------


@pytest.mark.django_db
def test_it_starts_stops_and_promotes_with_an_audit_trail(versions, olivia_operator):
    a, b = versions
    started = ab.start_experiment(b, 20, olivia_operator, "Brief")
    assert (started.version_a, started.version_b, started.percent_b) == (a, b, 20)
    start_row = Activation.objects.get(action="experiment_start")
    assert (start_row.version, start_row.previous, start_row.by) == (b, a, olivia_operator)
    with pytest.raises(ValidationError, match="already running"):
        ab.start_experiment(b, 20, olivia_operator, "Again")

    ab.stop_experiment(started, olivia_operator, "enough")
    started.refresh_from_db()
    assert started.status == "stopped" and started.stopped_at is not None
    assert Activation.objects.get(action="experiment_stop").reason == "enough"

    second = ab.start_experiment(b, 50, olivia_operator, "Brief again")
    assert ab.promote(second, "b", olivia_operator, "B escalates less") == b
    a.refresh_from_db()
    b.refresh_from_db()
    assert b.is_active and not a.is_active
    second.refresh_from_db()
    assert second.status == "stopped"
    promoted = Activation.objects.get(action="promote")
    assert (promoted.version, promoted.previous, promoted.reason) == (b, a, "B escalates less")


@pytest.mark.django_db
def test_it_refuses_a_draft_the_active_version_or_a_user_without_permission(
    versions, olivia_operator, alice_agent
):
    a, b = versions
    draft = PromptVersion.objects.create(name="Draft", system_prompt="x")
    with pytest.raises(ValidationError, match="draft"):
        ab.start_experiment(draft, 50, olivia_operator, "x")
    with pytest.raises(ValidationError, match="already the active"):
        ab.start_experiment(a, 50, olivia_operator, "x")
    with pytest.raises(PermissionDenied):
        ab.start_experiment(b, 50, alice_agent, "x")
    assert not Experiment.objects.exists() and not Activation.objects.exists()


def changelist_post(client: Client, action: str, experiment: Experiment) -> Any:
    return client.post(
        "/admin/studio/experiment/",
        {"action": action, "_selected_action": [experiment.pk]},
    )


@pytest.mark.django_db
def test_it_lets_only_operators_stop_or_promote_in_the_admin(
    experiment, versions, olivia_operator, alice_agent
):
    a, b = versions
    Experiment.objects.filter(pk=experiment.pk).update(name="<script>x</script>")
    agent = Client()
    agent.force_login(alice_agent)
    assert agent.get("/admin/studio/experiment/").status_code == 403
    assert agent.get(f"/admin/studio/experiment/{experiment.pk}/change/").status_code == 403
    assert changelist_post(agent, "promote_b", experiment).status_code == 403
    experiment.refresh_from_db()
    assert experiment.status == "running" and not Activation.objects.exists()

    operator = Client()
    operator.force_login(olivia_operator)
    listing = operator.get("/admin/studio/experiment/")
    assert listing.status_code == 200
    assert b"Promote B" in listing.content and b"<script>x" not in listing.content
    seed(experiment, "b", 2)
    page = operator.get(f"/admin/studio/experiment/{experiment.pk}/change/")
    assert page.status_code == 200
    assert b"Escalation rate" in page.content and b"Not enough data yet (0 and 2" in page.content
    assert b"<script>x" not in page.content and b"&lt;script&gt;x" in page.content

    assert operator.get("/admin/studio/experiment/add/").status_code == 200
    response = changelist_post(operator, "promote_b", experiment)
    assert response.status_code == 302
    b.refresh_from_db()
    experiment.refresh_from_db()
    assert b.is_active and experiment.status == "stopped"
    assert Activation.objects.filter(action="promote", by=olivia_operator, version=b).exists()


def test_it_leaves_conversations_that_began_before_the_experiment_on_the_active_version(
    experiment,
):
    earlier, during = conversations(2)
    Conversation.objects.filter(pk=earlier.pk).update(
        created_at=experiment.started_at - timedelta(minutes=5)
    )
    assert arm_for(earlier.pk) is None
    assert arm_for(during.pk) is not None
    assert not ExperimentAssignment.objects.filter(conversation=earlier).exists()
