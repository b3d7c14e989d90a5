"""Evaluating a prompt version over a test set, and the activation gate built on it.

- run_case(version, case): the reply the bot would give with that version (playground.answer:
  grounded, abstaining, not stored; a case made from a conversation is answered as in it)
  and the case's checks:
    must_cite        the reply's cited sources include the article;
    must_contain     every phrase appears (case-insensitive);
    must_not_contain no phrase appears (case-insensitive);
    must_escalate    an escalation rule matches the message, or the bot abstained.
- services.start_run(version, test_set, by) → EvalRun, queued on commit (tasks.run_evaluation);
  execute_run(run_id) does the work: one EvalResult per case (a redelivered task skips cases
  that have one), progress to the channel-layer group `studio.run.<id>`, then the scores.
- scores: the share of checks passed, per expectation kind and overall.
- compare(run, baseline): side by side, per kind and per case.
- gate(version): None when the version may be activated without a reason, else why not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from bot.grounding import strip_citations
from bot.types import ChatMessage, ProviderError
from conversations.escalation import escalation_for_message
from conversations.events import publish
from conversations.models import Conversation, Turn
from knowledge.models import Article

from .models import EvalResult, EvalRun, PromptVersion, TestCase, TestSet
from .playground import Answer, answer
from .selectors import active_version_fresh

logger = logging.getLogger(__name__)

KINDS = ("must_cite", "must_contain", "must_not_contain", "must_escalate")
KIND_LABELS = {
    "overall": "Overall",
    "must_cite": "Cites the article",
    "must_contain": "Contains phrases",
    "must_not_contain": "Avoids phrases",
    "must_escalate": "Escalates",
}


class EvaluationError(Exception):
    pass


@dataclass
class Outcome:
    reply: str
    checks: dict[str, bool]
    passed: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)
    escalated: bool = False


def case_messages(case: TestCase) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for turn in case.prior_turns or []:
        if not isinstance(turn, dict):
            continue
        role = turn.get("role")
        content = turn.get("content")
        if role in ("user", "assistant") and isinstance(content, str) and content:
            messages.append(ChatMessage("user" if role == "user" else "assistant", content))
    messages.append(ChatMessage("user", case.message))
    return messages


def _phrases(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str) and p.strip()]


def would_escalate(message: str) -> bool:
    """Whether the escalation rules hand a customer who writes this to a person."""
    return escalation_for_message(Conversation(), message) is not None


def check(case: TestCase, result: Answer, escalated: bool) -> dict[str, bool]:
    """The case's expectations (only those it has) against a reply."""
    checks: dict[str, bool] = {}
    text = result.text.casefold()
    if case.must_cite_id is not None:
        checks["must_cite"] = any(s.article_id == case.must_cite_id for s in result.sources)
    contain = _phrases(case.must_contain)
    if contain:
        checks["must_contain"] = all(p.casefold() in text for p in contain)
    avoid = _phrases(case.must_not_contain)
    if avoid:
        checks["must_not_contain"] = not any(p.casefold() in text for p in avoid)
    if case.must_escalate:
        checks["must_escalate"] = escalated or result.abstained
    return checks


def run_case(version: PromptVersion, case: TestCase) -> Outcome:
    """Answer the case as the bot would with this version and check it. A provider error is
    a failed case (its checks all fail), not a failed run."""
    escalated = would_escalate(case.message)
    try:
        result = answer(version, case_messages(case), conversation_id=case.source_conversation_id)
    except ProviderError as error:
        checks = dict.fromkeys(check_kinds(case), False)
        return Outcome(reply=f"[error: {error.code}] {error}", checks=checks, passed=False)
    checks = check(case, result, escalated)
    return Outcome(
        reply=result.text,
        checks=checks,
        passed=all(checks.values()),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_ms=result.total_ms,
        sources=[s.as_dict() for s in result.sources],
        escalated=escalated,
    )


def check_kinds(case: TestCase) -> list[str]:
    kinds = []
    if case.must_cite_id is not None:
        kinds.append("must_cite")
    if _phrases(case.must_contain):
        kinds.append("must_contain")
    if _phrases(case.must_not_contain):
        kinds.append("must_not_contain")
    if case.must_escalate:
        kinds.append("must_escalate")
    return kinds


# --- Scores -----------------------------------------------------------------------------------


def scores_of(checks: Iterable[dict[str, bool]]) -> dict[str, float]:
    """Share of checks passed per kind (kinds no case has are left out) and overall."""
    passed: dict[str, int] = {}
    total: dict[str, int] = {}
    for case_checks in checks:
        for kind, ok in case_checks.items():
            total[kind] = total.get(kind, 0) + 1
            passed[kind] = passed.get(kind, 0) + (1 if ok else 0)
    scores = {kind: round(passed[kind] / total[kind], 4) for kind in KINDS if kind in total}
    all_checks = sum(total.values())
    scores["overall"] = round(sum(passed.values()) / all_checks, 4) if all_checks else 1.0
    return scores


# --- Runs -------------------------------------------------------------------------------------


def run_group(run_id: int) -> str:
    return f"studio.run.{run_id}"


def progress_frame(run: EvalRun) -> dict[str, Any]:
    return {
        "type": "run.progress",
        "run_id": run.pk,
        "status": run.status,
        "done": run.done,
        "total": run.total,
        "scores": run.scores,
        "error": run.error,
    }


def publish_progress(run: EvalRun) -> None:
    try:
        publish(run_group(run.pk), progress_frame(run))
    except Exception:  # progress is a courtesy: the stored run is what counts
        logger.warning("run %s: could not publish progress", run.pk, exc_info=True)


def execute_run(run_id: int) -> None:
    """Run (or finish, after a redelivery) one evaluation. Safe to call twice."""
    run = EvalRun.objects.select_related("version", "test_set").filter(pk=run_id).first()
    if run is None or run.status in (EvalRun.Status.DONE, EvalRun.Status.FAILED):
        return
    EvalRun.objects.filter(pk=run.pk).update(status=EvalRun.Status.RUNNING)
    run.status = EvalRun.Status.RUNNING
    cases = list(run.test_set.cases.select_related("must_cite"))
    run.total = len(cases)
    have = set(EvalResult.objects.filter(run=run).values_list("case_id", flat=True))
    run.done = len(have)
    EvalRun.objects.filter(pk=run.pk).update(total=run.total, done=run.done)
    publish_progress(run)
    try:
        for case in cases:
            if case.pk in have:
                continue
            outcome = run_case(run.version, case)
            # Another delivery of this task may have stored it first.
            with contextlib.suppress(IntegrityError):
                EvalResult.objects.create(
                    run=run,
                    case=case,
                    reply=outcome.reply,
                    checks=outcome.checks,
                    passed=outcome.passed,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    latency_ms=outcome.latency_ms,
                )
            run.done = EvalResult.objects.filter(run=run).count()
            EvalRun.objects.filter(pk=run.pk).update(done=run.done)
            publish_progress(run)
    except Exception as exc:
        logger.exception("run %s failed", run.pk)
        run.status = EvalRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        publish_progress(run)
        return
    results = EvalResult.objects.filter(run=run)
    run.scores = scores_of(r.checks for r in results)
    run.done = results.count()
    run.status = EvalRun.Status.DONE
    run.finished_at = timezone.now()
    run.save(update_fields=["scores", "done", "status", "finished_at"])
    publish_progress(run)


# --- Comparing, and the gate ------------------------------------------------------------------


def latest_finished_run(version: PromptVersion, test_set: TestSet | int) -> EvalRun | None:
    return (
        EvalRun.objects.filter(version=version, test_set=test_set, status=EvalRun.Status.DONE)
        .order_by("-finished_at", "-id")
        .first()
    )


def baseline_for(run: EvalRun) -> EvalRun | None:
    """The active version's last finished run on the same test set (None for the active
    version's own runs)."""
    active = active_version_fresh()
    if active is None or active.pk == run.version_id:
        return None
    return latest_finished_run(active, run.test_set_id)


def compare(run: EvalRun, baseline: EvalRun | None) -> dict[str, Any]:
    """Scores per kind and per-case results of a run next to a baseline run's."""
    kinds = [
        k for k in ("overall", *KINDS) if k in run.scores or (baseline and k in baseline.scores)
    ]
    scores = []
    for kind in kinds:
        mine = run.scores.get(kind)
        theirs = baseline.scores.get(kind) if baseline else None
        delta = None if mine is None or theirs is None else round(mine - theirs, 4)
        scores.append(
            {
                "kind": kind,
                "label": KIND_LABELS[kind],
                "score": mine,
                "baseline": theirs,
                "delta": delta,
            }
        )
    theirs_by_case = (
        {r.case_id: r for r in EvalResult.objects.filter(run=baseline)} if baseline else {}
    )
    cases = []
    for result in EvalResult.objects.filter(run=run).select_related("case"):
        other = theirs_by_case.get(result.case_id)
        cases.append(
            {
                "case_id": result.case_id,
                "message": result.case.message,
                "reply": result.reply,
                "checks": result.checks,
                "passed": result.passed,
                "baseline_reply": other.reply if other else None,
                "baseline_checks": other.checks if other else None,
                "baseline_passed": other.passed if other else None,
            }
        )
    return {"scores": scores, "cases": cases}


def _fmt(score: float) -> str:
    return f"{score:.2f}"


def gate(version: PromptVersion) -> str | None:
    """Why this version should not be activated without a reason, or None.

    On every test set the active version has a finished run on, this version must have one
    too (operators never ship a prompt blind) and its latest overall score must be at least
    the active version's latest. No active version, or no finished run of the active one:
    None (there is nothing to compare with)."""
    active = active_version_fresh()
    if active is None or active.pk == version.pk:
        return None
    test_set_ids = (
        EvalRun.objects.filter(version=active, status=EvalRun.Status.DONE)
        .values_list("test_set_id", flat=True)
        .distinct()
    )
    for test_set in TestSet.objects.filter(pk__in=list(test_set_ids)).order_by("name"):
        theirs = latest_finished_run(active, test_set)
        mine = latest_finished_run(version, test_set)
        if theirs is None:
            continue
        if mine is None:
            return (
                f"Not evaluated on '{test_set.name}', where the active version scores "
                f"{_fmt(float(theirs.scores.get('overall', 0.0)))}"
            )
        my_score = float(mine.scores.get("overall", 0.0))
        their_score = float(theirs.scores.get("overall", 0.0))
        if my_score < their_score:
            return (
                f"Scores {_fmt(my_score)} on '{test_set.name}' against "
                f"{_fmt(their_score)} for the active version"
            )
    return None


# --- Cases from real conversations ------------------------------------------------------------


def case_from_conversation(conversation: Conversation, test_set: TestSet) -> TestCase:
    """A test case from a conversation: its last customer message, the turns before it as
    prior turns, must_cite the first article the bot's answer to it cited, must_escalate when
    the conversation went to a person. Operators refine it in the admin."""
    turns = list(Turn.objects.filter(conversation=conversation).dialogue().order_by("id"))
    last_customer = next(
        (i for i in range(len(turns) - 1, -1, -1) if turns[i].author == Turn.Author.CUSTOMER),
        None,
    )
    if last_customer is None:
        raise EvaluationError("This conversation has no customer message.")
    prior = [
        {
            "role": "user" if t.author == Turn.Author.CUSTOMER else "assistant",
            "content": strip_citations(t.text),
        }
        for t in turns[:last_customer]
        if t.text
    ]
    must_cite = None
    for turn in turns[last_customer + 1 :]:
        if turn.author == Turn.Author.BOT and turn.sources and not turn.abstained:
            article_id = turn.sources[0].get("article_id")
            if isinstance(article_id, int):
                must_cite = article_id
            break
    if must_cite is not None and not Article.objects.filter(pk=must_cite).exists():
        must_cite = None
    return TestCase.objects.create(
        test_set=test_set,
        message=turns[last_customer].text[:4000],
        prior_turns=prior,
        must_cite_id=must_cite,
        must_escalate=bool(conversation.escalation_reason),
        source_conversation=conversation,
    )
