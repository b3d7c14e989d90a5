"""Prompt versions and how operators ship them: activation with an audit trail, evaluation
test sets and runs, A/B experiments, and the price table that turns tokens into cost.

Each method here changes one row; workflows across rows live in studio/services.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from support_bot.config_cache import ConfigQuerySet


# A new version starts from the deployment's settings (support_bot/settings.py declares them).
def default_temperature() -> float:
    return float(settings.OPENAI_TEMPERATURE)


def default_max_tokens() -> int:
    return int(settings.OPENAI_MAX_TOKENS)


def default_history_tokens() -> int:
    return int(settings.CHAT_HISTORY_TOKENS)


def default_knowledge_tokens() -> int:
    return int(settings.KB_PROMPT_TOKENS)


class PromptVersion(models.Model):
    """What the bot is: its system prompt template, model and generation settings, and how much
    history and knowledge go into its context. Published versions are immutable; editing one
    makes a new draft."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    class Provider(models.TextChoices):
        DEFAULT = "", "As configured (LLM_PROVIDER)"
        OPENAI = "openai", "OpenAI-compatible"
        OFFLINE = "offline", "Offline answerer"

    # What a published version can never change (everything that shapes a reply).
    CONTENT_FIELDS = (
        "system_prompt",
        "provider",
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "history_tokens",
        "knowledge_tokens",
        "requests_per_min",
        "tokens_per_min",
    )

    name = models.CharField(max_length=200)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # A template: {company}, {language} (the customer's), {customer_name}, {passages} (the
    # numbered knowledge passages; appended after the prompt when the template omits it).
    system_prompt = models.TextField()
    provider = models.CharField(max_length=20, choices=Provider.choices, blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Empty: OPENAI_MODEL.")
    temperature = models.FloatField(default=default_temperature)
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField(default=default_max_tokens)
    stop = models.JSONField(default=list, blank=True)
    # The context budget, in estimated tokens: older turns beyond history_tokens are summarised
    # or dropped; passages beyond knowledge_tokens are cut.
    history_tokens = models.PositiveIntegerField(default=default_history_tokens)
    knowledge_tokens = models.PositiveIntegerField(default=default_knowledge_tokens)
    # The budget of the account the named provider's model runs on, a minute (shared by every
    # worker: bot/providers/budget.py). Empty: the environment's; 0: no limit.
    requests_per_min = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests a minute the model's account allows. Empty: OPENAI_REQUESTS_PER_MIN; "
        "0: no limit. Needs a named provider.",
    )
    tokens_per_min = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Tokens a minute (prompt plus max tokens, as the provider counts them). "
        "Empty: OPENAI_TOKENS_PER_MIN; 0: no limit. Needs a named provider.",
    )

    state = models.CharField(max_length=12, choices=State.choices, default=State.DRAFT)
    # The one version the bot uses (the control arm while an A/B experiment runs).
    is_active = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    # Read through support_bot.config_cache: bulk writes (activation) must announce themselves.
    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_prompt_version"
            ),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(state="published"),
                name="only_published_versions_are_active",
            ),
            models.CheckConstraint(
                condition=Q(temperature__gte=0, temperature__lte=2), name="temperature_0_to_2"
            ),
            models.CheckConstraint(condition=Q(top_p__gt=0, top_p__lte=1), name="top_p_0_to_1"),
        ]
        permissions = [
            ("activate_promptversion", "Can activate and roll back prompt versions"),
            ("use_playground", "Can try prompt versions in the playground"),
            ("run_evaluation", "Can run evaluations"),
            ("export_finetune", "Can export fine-tuning data"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk}, {self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            stored = (
                PromptVersion.objects.filter(pk=self.pk)
                .values("state", *self.CONTENT_FIELDS)
                .first()
            )
            if stored is not None and stored["state"] == self.State.PUBLISHED:
                changed = [f for f in self.CONTENT_FIELDS if stored[f] != getattr(self, f)]
                if changed:
                    raise ValidationError(
                        f"Version #{self.pk} is published and can't change "
                        f"({', '.join(changed)}); edit it as a new draft."
                    )
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        budget = {"requests_per_min": self.requests_per_min, "tokens_per_min": self.tokens_per_min}
        if self.provider != self.Provider.OPENAI and any(v is not None for v in budget.values()):
            message = "A budget is the model account's: name the OpenAI-compatible provider."
            raise ValidationError({name: message for name, v in budget.items() if v is not None})

    @property
    def is_published(self) -> bool:
        return self.state == self.State.PUBLISHED

    def content(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.CONTENT_FIELDS}


class Activation(models.Model):
    """The audit trail: every change of the active version (and of experiments), who, when,
    why."""

    class Action(models.TextChoices):
        ACTIVATE = "activate", "Activated"
        ROLLBACK = "rollback", "Rolled back"
        EXPERIMENT_START = "experiment_start", "Experiment started"
        EXPERIMENT_STOP = "experiment_stop", "Experiment stopped"
        PROMOTE = "promote", "Experiment winner promoted"

    action = models.CharField(max_length=20, choices=Action.choices)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    previous = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)
    # Activated although its last evaluation scored worse than the active version's.
    gate_overridden = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.version} at {self.at:%Y-%m-%d %H:%M}"


class ModelPrice(models.Model):
    """What a model costs, per million tokens. A model without a row costs nothing (offline)."""

    model = models.CharField(max_length=200, unique=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")

    # Read through support_bot.config_cache: bulk writes must announce themselves.
    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model}: {self.input_per_million}/{self.output_per_million} {self.currency}"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        million = Decimal(1_000_000)
        return (
            Decimal(prompt_tokens) * self.input_per_million
            + Decimal(completion_tokens) * self.output_per_million
        ) / million


class TestSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TestCase(models.Model):
    """A customer message (with optional earlier turns) and what a good reply must do."""

    test_set = models.ForeignKey(TestSet, on_delete=models.CASCADE, related_name="cases")
    message = models.TextField(max_length=4000)
    # Earlier turns: [{"role": "user"|"assistant", "content": "..."}]
    prior_turns = models.JSONField(default=list, blank=True)
    must_cite = models.ForeignKey(
        "knowledge.Article", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    must_contain = models.JSONField(default=list, blank=True)
    must_not_contain = models.JSONField(default=list, blank=True)
    must_escalate = models.BooleanField(default=False)
    # The real conversation this case was made from, if any.
    source_conversation = models.ForeignKey(
        "conversations.Conversation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.message[:60]


class EvalRun(models.Model):
    """One version over one test set, run by a Celery task; progress is done/total."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="runs")
    test_set = models.ForeignKey(TestSet, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    # {"overall": 0.83, "must_cite": 0.9, "must_contain": ..., ...}: share of checks passed.
    scores = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.version} on {self.test_set} ({self.status})"


class EvalResult(models.Model):
    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(TestCase, on_delete=models.CASCADE, related_name="+")
    reply = models.TextField(blank=True)
    # {"must_cite": true, "must_contain": false, ...} for the expectations the case has.
    checks = models.JSONField(default=dict)
    passed = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "case"], name="one_result_per_case_and_run")
        ]

    def __str__(self) -> str:
        return f"{'passed' if self.passed else 'failed'}: {self.case}"


class Experiment(models.Model):
    """An A/B test: new conversations are split between the active version (A) and a
    challenger (B), sticky per conversation."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    name = models.CharField(max_length=200)
    version_a = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    version_b = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    # Share of new conversations that get B, 1-99.
    percent_b = models.PositiveSmallIntegerField(default=50)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    # Read through support_bot.config_cache: bulk writes must announce themselves.
    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="one_running_experiment"
            ),
            models.CheckConstraint(
                condition=Q(percent_b__gte=1, percent_b__lte=99), name="percent_b_1_to_99"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ExperimentAssignment(models.Model):
    """Which arm a conversation is in: decided once, at its first bot reply."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    conversation = models.OneToOneField(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="experiment_arm"
    )
    arm = models.CharField(max_length=1, choices=[("a", "A"), ("b", "B")])
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["experiment", "arm"])]

    def __str__(self) -> str:
        return f"{self.conversation_id} in arm {self.arm.upper()}"
