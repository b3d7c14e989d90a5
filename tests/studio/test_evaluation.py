"""Evaluations (studio/evaluation.py): checks per expectation kind, scores, the activation
gate, and a run through a real Celery worker and the fake OpenAI server."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from bot.types import Source
from conversations.models import Conversation, EscalationRule, Turn
from knowledge.models import Article
from studio import evaluation, services
from studio.models import Activation, EvalResult, EvalRun, PromptVersion
from studio.models import TestCase as Case
from studio.models import TestSet as CaseSet
from studio.playground import Answer
from tests import personas
from tests.conftest import receive_until
from tests.fixtures_kb import indexed_article
from tests.inbox.test_permissions import session_cookie

olivia_operator = personas.olivia_operator


def reply(text: str, *, cites: list[int] = (), abstained: bool = False) -> Answer:  # type: ignore[assignment]
    return Answer(
        text=text,
        sources=[Source(f"Article {a}", "", a, n) for n, a in enumerate(cites, 1)],
        abstained=abstained,
        model="m",
        prompt_tokens=10,
        completion_tokens=5,
        first_token_ms=1,
        total_ms=2,
        messages=[],
    )


@pytest.fixture
def refunds(db: None) -> CaseSet:
    return CaseSet.objects.create(name="Refunds")


@pytest.fixture
def article(db: None) -> Article:
    return indexed_article(
        slug="rain",
        title="Do you deliver when it rains?",
        body="Yes. Our couriers deliver in any weather, and parcels travel in waterproof bags.",
    )


def published(name: str, **fields) -> PromptVersion:
    version = services.create_draft(by=None, name=name, **fields)
    return services.publish(version, by=None)


# --- Checks per expectation kind --------------------------------------------------------------


def test_must_cite_passes_only_when_the_article_is_among_the_cited_sources(refunds, article):
    case = Case.objects.create(test_set=refunds, message="Rain?", must_cite=article)
    assert evaluation.check(case, reply("Yes [1]", cites=[article.pk]), False) == {
        "must_cite": True
    }
    assert evaluation.check(case, reply("Yes", cites=[]), False) == {"must_cite": False}
    assert evaluation.check(case, reply("Yes [1]", cites=[article.pk + 1]), False) == {
        "must_cite": False
    }


def test_must_contain_and_must_not_contain_are_case_insensitive_over_every_phrase(refunds):
    case = Case.objects.create(
        test_set=refunds,
        message="Refund?",
        must_contain=["14 days", "Original Payment"],
        must_not_contain=["guarantee", "lawyer"],
    )
    good = reply("You get it within 14 DAYS to your original payment method.")
    assert evaluation.check(case, good, False) == {"must_contain": True, "must_not_contain": True}
    half = reply("Within 14 days, we GUARANTEE it.")
    assert evaluation.check(case, half, False) == {"must_contain": False, "must_not_contain": False}


def test_must_escalate_passes_when_a_rule_matches_or_the_bot_abstains(refunds):
    EscalationRule.objects.get_or_create(kind="handoff_phrase", pattern="talk to a person")
    case = Case.objects.create(
        test_set=refunds, message="Can I talk to a person?", must_escalate=True
    )
    assert evaluation.would_escalate(case.message)
    assert not evaluation.would_escalate("Where is my parcel?")
    assert evaluation.check(case, reply("Sure"), True) == {"must_escalate": True}
    assert evaluation.check(case, reply("I couldn't find it", abstained=True), False) == {
        "must_escalate": True
    }
    assert evaluation.check(case, reply("Here you go"), False) == {"must_escalate": False}


def test_a_case_without_expectations_checks_nothing(refunds):
    case = Case.objects.create(test_set=refunds, message="Hi")
    assert evaluation.check(case, reply("Hello"), False) == {}


def test_scores_are_the_share_of_checks_passed_per_kind_and_overall():
    scores = evaluation.scores_of(
        [
            {"must_cite": True, "must_contain": False},
            {"must_cite": False, "must_escalate": True},
            {"must_cite": True},
        ]
    )
    assert scores == {
        "must_cite": round(2 / 3, 4),
        "must_contain": 0.0,
        "must_escalate": 1.0,
        "overall": round(3 / 5, 4),
    }


def test_a_case_is_made_from_a_real_conversation(refunds, alice_conversation, article):
    Turn.objects.create(conversation=alice_conversation, author="customer", text="Hello")
    Turn.objects.create(
        conversation=alice_conversation, author="bot", text="Hi! [1]", status="done"
    )
    Turn.objects.create(
        conversation=alice_conversation, author="customer", text="Do you deliver in rain?"
    )
    Turn.objects.create(
        conversation=alice_conversation,
        author="bot",
        status="done",
        text="Yes [1]",
        sources=[{"n": 1, "title": article.title, "url": "", "article_id": article.pk}],
    )
    Conversation.objects.filter(pk=alice_conversation.pk).update(escalation_reason="angry")
    alice_conversation.refresh_from_db()
    case = evaluation.case_from_conversation(alice_conversation, refunds)
    assert case.message == "Do you deliver in rain?"
    assert case.prior_turns == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
    ]
    assert case.must_cite_id == article.pk
    assert case.must_escalate and case.source_conversation_id == alice_conversation.pk


# --- The gate ---------------------------------------------------------------------------------


def finished_run(version: PromptVersion, test_set: CaseSet, overall: float) -> EvalRun:
    return EvalRun.objects.create(
        version=version,
        test_set=test_set,
        status=EvalRun.Status.DONE,
        scores={"overall": overall},
        finished_at=timezone.now(),
    )


@pytest.fixture
def active(db: None) -> PromptVersion:
    version = published("Current")
    services.activate(version, by=None, allow_worse=True)
    version.refresh_from_db()
    assert version.is_active
    return version


def test_the_gate_blocks_a_version_that_scores_worse_than_the_active_one(active, refunds):
    candidate = published("Candidate")
    assert evaluation.gate(candidate) is None  # nothing evaluated yet
    finished_run(active, refunds, 0.84)
    assert evaluation.gate(candidate) == (  # never shipped blind
        "Not evaluated on 'Refunds', where the active version scores 0.84"
    )
    finished_run(candidate, refunds, 0.71)
    assert evaluation.gate(candidate) == (
        "Scores 0.71 on 'Refunds' against 0.84 for the active version"
    )
    finished_run(candidate, refunds, 0.84)  # its latest run counts
    assert evaluation.gate(candidate) is None
    assert evaluation.gate(active) is None


def test_the_gate_compares_the_latest_finished_runs_only(active, refunds):
    candidate = published("Candidate")
    finished_run(active, refunds, 0.5)
    finished_run(candidate, refunds, 0.6)
    EvalRun.objects.create(version=candidate, test_set=refunds, scores={"overall": 0.1})  # queued
    assert evaluation.gate(candidate) is None
    finished_run(active, refunds, 0.9)
    assert "0.60 on 'Refunds' against 0.90" in (evaluation.gate(candidate) or "")


def test_a_worse_version_is_activated_only_with_a_reason_which_is_recorded(
    active, refunds, olivia_operator
):
    candidate = published("Candidate")
    finished_run(active, refunds, 0.84)
    finished_run(candidate, refunds, 0.71)
    with pytest.raises(services.GateBlocked, match="0.71 on 'Refunds' against 0.84"):
        services.activate(candidate, by=olivia_operator)
    assert PromptVersion.objects.get(is_active=True) == active

    services.activate(candidate, by=olivia_operator, reason="Fixes the tone; scores next week")
    assert PromptVersion.objects.get(is_active=True) == candidate
    record = Activation.objects.filter(version=candidate).get()
    assert record.gate_overridden and record.by == olivia_operator
    assert record.reason == "Fixes the tone; scores next week"


# --- Runs -------------------------------------------------------------------------------------


def cases(test_set: CaseSet, article: Article) -> list[Case]:
    return [
        Case.objects.create(
            test_set=test_set,
            message="Do you still deliver parcels when it rains?",
            must_cite=article,
            must_not_contain=["lawyer"],
        ),
        Case.objects.create(
            test_set=test_set,
            message="Do couriers deliver in any weather?",
            prior_turns=[
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi! How can I help?"},
            ],
            must_contain=["waterproof"],
        ),
        Case.objects.create(
            test_set=test_set, message="What is the airspeed of a swallow?", must_escalate=True
        ),
    ]


def test_a_redelivered_run_skips_the_cases_that_have_a_result(refunds, article):
    """In-process, with the offline answerer (the test default)."""
    version = published("Offline", provider="offline")
    made = cases(refunds, article)
    run = EvalRun.objects.create(version=version, test_set=refunds, total=len(made))
    evaluation.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "done" and run.done == 3
    first = {r.case_id: r.pk for r in EvalResult.objects.filter(run=run)}
    assert set(first) == {c.pk for c in made}

    # The worker died after two cases: the task is delivered again.
    EvalResult.objects.filter(run=run, case=made[2]).delete()
    EvalRun.objects.filter(pk=run.pk).update(status="running", done=2, scores={})
    evaluation.execute_run(run.pk)
    evaluation.execute_run(run.pk)  # and once more, after it finished
    results = {r.case_id: r.pk for r in EvalResult.objects.filter(run=run)}
    assert len(results) == 3
    assert results[made[0].pk] == first[made[0].pk] and results[made[1].pk] == first[made[1].pk]
    run.refresh_from_db()
    assert run.status == "done" and run.done == 3 and "overall" in run.scores


def model_env(fake_llm) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "offline",  # the version says "openai": its setting must win
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_MODEL": "not-this-model",
    }


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
async def test_a_run_goes_through_a_real_worker_and_the_fake_model_with_live_progress(
    fake_llm, celery_worker, olivia_operator
):
    from support_bot.asgi import application

    def setup():
        test_set = CaseSet.objects.create(name="Weather")
        article = indexed_article(
            slug="rain",
            title="Do you deliver when it rains?",
            url="https://help.example/rain",
            body=(
                "Couriers deliver in any weather, with parcels in waterproof bags. "
                "Rain never delays a delivery."
            ),
        )
        made = cases(test_set, article)
        version = published("Fake model", provider="openai", model="fake-model-2")
        return test_set, made, version

    test_set, made, version = await database_sync_to_async(setup)()
    await asyncio.to_thread(celery_worker, **model_env(fake_llm))

    cookie = await database_sync_to_async(session_cookie)(olivia_operator)
    socket = WebsocketCommunicator(
        application,
        "/ws/studio/",
        [(b"origin", b"http://127.0.0.1"), (b"cookie", cookie.encode())],
    )
    assert (await socket.connect(timeout=5))[0]
    assert (await socket.receive_json_from(timeout=5))["type"] == "hello"

    run = await database_sync_to_async(services.start_run)(version, test_set, olivia_operator)
    await socket.send_json_to({"type": "watch_run", "run_id": run.pk})
    frames = await receive_until(
        socket, lambda f: f["type"] == "run.progress" and f["status"] == "done", timeout=60
    )
    progress = [f["done"] for f in frames if f["type"] == "run.progress"]
    assert progress == sorted(progress) and progress[-1] == 3
    assert frames[-1]["total"] == 3 and "overall" in frames[-1]["scores"]
    await socket.disconnect()

    def stored():
        run.refresh_from_db()
        return run, list(EvalResult.objects.filter(run=run).order_by("case_id"))

    run, results = await database_sync_to_async(stored)()
    assert run.status == "done" and run.done == 3 and run.finished_at is not None
    assert [r.case_id for r in results] == [c.pk for c in made]
    by_case = {r.case_id: r for r in results}
    # The fake model quotes and cites passage [1]: the article is cited, "waterproof" quoted.
    assert by_case[made[0].pk].checks == {"must_cite": True, "must_not_contain": True}
    assert by_case[made[1].pk].checks == {"must_contain": True}
    # Nothing in the knowledge base about swallows: the bot abstains, which escalates.
    assert by_case[made[2].pk].checks == {"must_escalate": True}
    assert run.scores["overall"] == 1.0
    assert all(r.prompt_tokens > 0 for r in results[:2])

    requests = [r["body"] for r in fake_llm.requests()]
    assert len(requests) == 2  # the abstained case asks no model
    assert {r["model"] for r in requests} == {"fake-model-2"}
    second = next(r for r in requests if "any weather" in r["messages"][-1]["content"])
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert "[1] Do you deliver when it rains?" in second["messages"][0]["content"]
    # Nothing reached a conversation.
    assert await Turn.objects.acount() == 0
