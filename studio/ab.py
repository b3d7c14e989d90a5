"""A/B experiments: per-arm metrics, their statistics and a plain-words verdict, and the
workflows that start, stop and promote an experiment.

Statistics (studio.statistics) are computed with scipy.stats, a maintained library tested
against reference values, rather than with distributions written here:
- proportions (escalation, resolution without a human): Wilson score interval per arm
  (scipy), and Newcombe's hybrid score interval of the difference B - A (the verdict; its
  formula on the Wilson bounds, as scipy has none), with the pooled two-proportion z-test's
  p-value shown alongside;
- means (CSAT, tokens, cost, reply latency): Welch's t interval of the difference B - A
  (scipy's ttest_ind with unequal variances);
- a metric is judged only with at least MIN_CONVERSATIONS conversations per arm and, for
  proportions, at least MIN_EVENTS events and non-events over both arms, or, for means, at
  least MIN_VALUES values per arm; otherwise "Not enough data yet".

A difference is called when its 95 % interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from statistics import fmean, median
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import (
    Avg,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.models import Conversation, Turn

from . import services
from .models import Activation, Experiment, PromptVersion
from .statistics import (
    newcombe,
    percentile,
    two_proportion_p,
    welch,
)

CONFIDENCE = 0.95
MIN_CONVERSATIONS = 30
MIN_EVENTS = 5
MIN_VALUES = 10
# Reply latencies read per arm (the most recent), to bound memory on long experiments.
LATENCY_CAP = 20_000
ACTIVATE_PERMISSION = "studio.activate_promptversion"


# --- Statistics (pure) -------------------------------------------------------------------
# In studio.statistics, on scipy.stats; imported above, so ab.wilson, ab.welch… still work.


# --- Verdicts (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Wording:
    """How a metric reads: its label, whether lower is better, and the verbs for B."""

    label: str
    lower_is_better: bool
    less: str  # "B escalates less"
    more: str
    unit: str  # "%" for proportions, else appended to means


WORDING: dict[str, Wording] = {
    "escalation": Wording("Escalation rate", True, "B escalates less", "B escalates more", "%"),
    "resolution": Wording(
        "Resolved without a human",
        False,
        "B resolves fewer without a human",
        "B resolves more without a human",
        "%",
    ),
    "csat": Wording("CSAT", False, "B is rated lower", "B is rated higher", ""),
    "tokens": Wording(
        "Tokens per conversation", True, "B uses fewer tokens", "B uses more tokens", ""
    ),
    "cost": Wording("Cost per conversation", True, "B costs less", "B costs more", ""),
    "latency": Wording("Reply latency (mean)", True, "B replies faster", "B replies slower", " ms"),
}
QUALITY_METRICS = ("escalation", "resolution", "csat")


@dataclass
class Comparison:
    metric: str
    enough_data: bool
    significant: bool
    b_better: bool | None  # None: no clear difference (or not enough data)
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    verdict: str


def _confidence_words(confidence: float) -> str:
    return f"{confidence * 100:g}% confidence"


def not_enough(metric: str, n_a: int, n_b: int, detail: str = "") -> Comparison:
    words = f"Not enough data yet ({n_a} and {n_b} {detail or 'conversations'})"
    return Comparison(metric, False, False, None, None, None, None, None, words)


def compare_proportions(
    metric: str,
    events_a: int,
    n_a: int,
    events_b: int,
    n_b: int,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """The verdict on a rate: B vs A, from Newcombe's interval of the difference."""
    if min(n_a, n_b) < MIN_CONVERSATIONS:
        return not_enough(metric, n_a, n_b)
    events = events_a + events_b
    if min(events, n_a + n_b - events) < MIN_EVENTS:
        return not_enough(metric, events_a, events_b, "events")
    wording = WORDING[metric]
    low, high = newcombe(events_a, n_a, events_b, n_b, confidence)
    difference = events_b / n_b - events_a / n_a
    figures = f"{events_b / n_b:.0%} vs {events_a / n_a:.0%}"
    p_value = two_proportion_p(events_a, n_a, events_b, n_b)
    return _judge(metric, wording, difference, low, high, p_value, figures, confidence)


def compare_means(
    metric: str,
    a: list[float],
    b: list[float],
    n_a: int,
    n_b: int,
    confidence: float = CONFIDENCE,
    decimals: int = 1,
) -> Comparison:
    """The verdict on a mean: B vs A, from Welch's interval of the difference. n_a and n_b are
    the arms' conversations (the minimum-sample rule); a and b the values."""
    if min(n_a, n_b) < MIN_CONVERSATIONS:
        return not_enough(metric, n_a, n_b)
    if min(len(a), len(b)) < MIN_VALUES:
        detail = "ratings" if metric == "csat" else "values"
        return not_enough(metric, len(a), len(b), detail)
    wording = WORDING[metric]
    result = welch(a, b, confidence)
    figures = f"{fmean(b):.{decimals}f}{wording.unit} vs {fmean(a):.{decimals}f}{wording.unit}"
    return _judge(
        metric,
        wording,
        result.difference,
        result.low,
        result.high,
        result.p_value,
        figures,
        confidence,
    )


def _judge(
    metric: str,
    wording: Wording,
    difference: float,
    low: float,
    high: float,
    p_value: float,
    figures: str,
    confidence: float,
) -> Comparison:
    if low > 0 or high < 0:
        lower = high < 0
        words = f"{wording.less if lower else wording.more} ({figures}), " + _confidence_words(
            confidence
        )
        b_better = lower == wording.lower_is_better
        return Comparison(metric, True, True, b_better, difference, low, high, p_value, words)
    words = f"No clear difference in {wording.label.lower()} yet ({figures})"
    return Comparison(metric, True, False, None, difference, low, high, p_value, words)


def _labels(metrics: list[str]) -> str:
    return ", ".join(WORDING[m].label.lower() for m in metrics)


def recommendation(comparisons: dict[str, Comparison], n_a: int, n_b: int) -> str:
    """One sentence for the operator: promote B, keep A, or keep collecting."""
    if min(n_a, n_b) < MIN_CONVERSATIONS:
        return (
            f"Not enough data yet ({n_a} and {n_b} conversations; at least "
            f"{MIN_CONVERSATIONS} per arm are needed). Keep the experiment running."
        )
    better = [m for m in QUALITY_METRICS if comparisons[m].significant and comparisons[m].b_better]
    worse = [
        m for m in QUALITY_METRICS if comparisons[m].significant and not comparisons[m].b_better
    ]
    if better and worse:
        return (
            f"Mixed: B is better on {_labels(better)} but worse on {_labels(worse)}. "
            "Weigh them before promoting."
        )
    if better:
        return f"B is better on {_labels(better)} and worse on none: promote B."
    if worse:
        return f"B is worse on {_labels(worse)}: stop the experiment or promote A."
    cheaper = [
        m
        for m in ("cost", "tokens", "latency")
        if comparisons[m].significant and comparisons[m].b_better
    ]
    if cheaper:
        return (
            f"No clear difference in quality yet; B is better on {_labels(cheaper)}. "
            "Keep collecting, or promote B if the saving matters."
        )
    return "No clear winner yet: keep the experiment running."


# --- Metrics (queries) -------------------------------------------------------------------


@dataclass
class ArmMetrics:
    arm: str
    version: PromptVersion
    conversations: int = 0
    escalated: int = 0
    resolved_without_human: int = 0
    ratings: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)  # per conversation
    costs: list[float] = field(default_factory=list)  # per conversation
    latencies: list[float] = field(default_factory=list)  # first_token_ms of bot replies

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.conversations if self.conversations else None

    @property
    def resolution_rate(self) -> float | None:
        return self.resolved_without_human / self.conversations if self.conversations else None

    @property
    def csat(self) -> float | None:
        return fmean(self.ratings) if self.ratings else None

    @property
    def tokens_per_conversation(self) -> float | None:
        return fmean(self.tokens) if self.tokens else None

    @property
    def cost_per_conversation(self) -> float | None:
        return fmean(self.costs) if self.costs else None

    @property
    def latency_median(self) -> float | None:
        return median(self.latencies) if self.latencies else None

    @property
    def latency_p90(self) -> float | None:
        return percentile(self.latencies, 90)


@dataclass
class Report:
    experiment: Experiment
    a: ArmMetrics
    b: ArmMetrics
    comparisons: dict[str, Comparison]
    recommendation: str


def _in_experiment(experiment: Experiment, prefix: str = "") -> Q:
    """Bot replies written while the conversation was in the experiment."""
    query = Q(**{f"{prefix}author": Turn.Author.BOT})
    if experiment.stopped_at is not None:
        query &= Q(**{f"{prefix}created_at__lte": experiment.stopped_at})
    return query


def conversation_rows(experiment: Experiment) -> list[tuple[Any, ...]]:
    """One row per assigned conversation (one query): arm, assigned at, escalated at, rating,
    resolved at, assignee, whether a person wrote, and the sums of its bot replies."""
    bot = _in_experiment(experiment, "turns__")
    zero = Value(0, output_field=IntegerField())
    person_wrote = Turn.objects.filter(conversation=OuterRef("pk"), author=Turn.Author.AGENT)
    return list(
        Conversation.objects.filter(experiment_arm__experiment=experiment)
        .annotate(
            prompt=Coalesce(Sum("turns__prompt_tokens", filter=bot), zero),
            completion=Coalesce(Sum("turns__completion_tokens", filter=bot), zero),
            spent=Sum("turns__cost", filter=bot),
            latency=Avg("turns__first_token_ms", filter=bot),
            person_wrote=Exists(person_wrote),
        )
        .order_by()
        .values_list(
            "experiment_arm__arm",
            "experiment_arm__created_at",
            "escalated_at",
            "rating",
            "resolved_at",
            "assignee_id",
            "person_wrote",
            "prompt",
            "completion",
            "spent",
            "latency",
        )
    )


def reply_latencies(experiment: Experiment, arm: str) -> list[float]:
    """first_token_ms of the arm's bot replies, the most recent LATENCY_CAP (one query)."""
    values = (
        Turn.objects.filter(
            _in_experiment(experiment),
            conversation__experiment_arm__experiment=experiment,
            conversation__experiment_arm__arm=arm,
            first_token_ms__isnull=False,
        )
        .order_by("-id")
        .values_list("first_token_ms", flat=True)[:LATENCY_CAP]
    )
    return [float(v) for v in values if v is not None]


def metrics(experiment: Experiment, confidence: float = CONFIDENCE) -> Report:
    """Every arm's metrics and the comparisons, in a fixed number of queries (five at most:
    the two versions, the conversations, the two arms' latencies)."""
    arms = {
        "a": ArmMetrics("a", experiment.version_a),
        "b": ArmMetrics("b", experiment.version_b),
    }
    per_conversation_latency: dict[str, list[float]] = {"a": [], "b": []}
    for (
        arm,
        assigned_at,
        escalated_at,
        rating,
        resolved_at,
        assignee_id,
        person_wrote,
        prompt,
        completion,
        spent,
        latency,
    ) in conversation_rows(experiment):
        m = arms[arm]
        m.conversations += 1
        escalated = escalated_at is not None and escalated_at >= assigned_at
        m.escalated += escalated
        human = escalated_at is not None or assignee_id is not None or person_wrote
        m.resolved_without_human += resolved_at is not None and not human
        if rating is not None:
            m.ratings.append(float(rating))
        m.tokens.append(float(prompt + completion))
        m.costs.append(float(spent or Decimal(0)))
        if latency is not None:
            per_conversation_latency[arm].append(float(latency))
    for arm, m in arms.items():
        m.latencies = reply_latencies(experiment, arm)
    a, b = arms["a"], arms["b"]
    n_a, n_b = a.conversations, b.conversations
    comparisons = {
        "escalation": compare_proportions(
            "escalation", a.escalated, n_a, b.escalated, n_b, confidence
        ),
        "resolution": compare_proportions(
            "resolution", a.resolved_without_human, n_a, b.resolved_without_human, n_b, confidence
        ),
        "csat": compare_means("csat", a.ratings, b.ratings, n_a, n_b, confidence, decimals=2),
        "tokens": compare_means("tokens", a.tokens, b.tokens, n_a, n_b, confidence, decimals=0),
        "cost": compare_means("cost", a.costs, b.costs, n_a, n_b, confidence, decimals=6),
        # The conversation is the unit of randomisation: compare its mean reply latency.
        "latency": compare_means(
            "latency",
            per_conversation_latency["a"],
            per_conversation_latency["b"],
            n_a,
            n_b,
            confidence,
            decimals=0,
        ),
    }
    return Report(experiment, a, b, comparisons, recommendation(comparisons, n_a, n_b))


# --- Workflows ---------------------------------------------------------------------------


def _require_permission(by: Any) -> None:
    if by is None or not by.has_perm(ACTIVATE_PERMISSION):
        raise PermissionDenied("You don't have permission to run experiments.")


def check_start(version_b: PromptVersion, percent_b: int) -> PromptVersion:
    """The active version (arm A), or a ValidationError saying why B can't be tried."""
    version_a = PromptVersion.objects.filter(is_active=True).first()
    if version_a is None:
        raise ValidationError("No version is active: activate one before an experiment.")
    if not version_b.is_published:
        raise ValidationError(f"Version #{version_b.pk} is a draft: publish it first.")
    if version_b.pk == version_a.pk:
        raise ValidationError(f"Version #{version_b.pk} is already the active version (A).")
    if not 1 <= percent_b <= 99:
        raise ValidationError("The share of conversations for B must be 1-99 %.")
    if Experiment.objects.filter(status=Experiment.Status.RUNNING).exists():
        raise ValidationError("An experiment is already running: stop it first.")
    return version_a


def start_experiment(
    version_b: PromptVersion, percent_b: int, by: Any, name: str = ""
) -> Experiment:
    """Start splitting new conversations: percent_b % to version_b, the rest to the active
    version. One experiment runs at a time (a database constraint backs the check)."""
    _require_permission(by)
    with transaction.atomic():
        version_a = check_start(version_b, percent_b)
        name = name or f"{version_a.name} vs {version_b.name}"
        try:
            with transaction.atomic():
                experiment = Experiment.objects.create(
                    name=name,
                    version_a=version_a,
                    version_b=version_b,
                    percent_b=percent_b,
                    started_by=by,
                )
        except IntegrityError as error:
            raise ValidationError("An experiment is already running: stop it first.") from error
        Activation.objects.create(
            action=Activation.Action.EXPERIMENT_START,
            version=version_b,
            previous=version_a,
            by=by,
            reason=f"{name}: {percent_b}% of new conversations to B",
        )
    return experiment


def stop_experiment(experiment: Experiment, by: Any, reason: str = "") -> Experiment:
    """Stop: new replies of every conversation go back to the active version."""
    _require_permission(by)
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.RUNNING:
            raise ValidationError(f"Experiment {locked.name!r} is already stopped.")
        locked.status = Experiment.Status.STOPPED
        locked.stopped_at = timezone.now()
        locked.save(update_fields=["status", "stopped_at"])
        Activation.objects.create(
            action=Activation.Action.EXPERIMENT_STOP,
            version=locked.version_b,
            previous=locked.version_a,
            by=by,
            reason=reason,
        )
    experiment.status, experiment.stopped_at = locked.status, locked.stopped_at
    return experiment


def _make_active(version: PromptVersion, by: Any, reason: str) -> Activation:
    """Through the versions workflow (services.activate), so its locking and audit trail apply;
    the experiment's result overrides the evaluation gate."""
    return services.activate(
        version, by=by, reason=reason, allow_worse=True, action=Activation.Action.PROMOTE
    )


def promote(experiment: Experiment, arm: str, by: Any, reason: str = "") -> PromptVersion:
    """Stop the experiment (if running) and make the arm's version the active one; recorded as
    a "promote" activation."""
    if arm not in ("a", "b"):
        raise ValidationError(f"Unknown arm {arm!r}: 'a' or 'b'.")
    _require_permission(by)
    with transaction.atomic():
        if Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.RUNNING).exists():
            stop_experiment(experiment, by, reason or f"Promoting {arm.upper()}")
        version = experiment.version_b if arm == "b" else experiment.version_a
        reason = reason or f"Winner of experiment {experiment.name!r} (arm {arm.upper()})"
        _make_active(version, by, reason)
    return version
