"""Prompt versions: immutability once published, drafts, activation and rollback with their
audit trail, the bot using the active version from the next turn (through the fake
OpenAI-compatible server and the real openai client), the cost of each turn, template
variables, the bounded context, the fine-tuning export, and who may do any of it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bot import config as bot_config
from bot.config import BotConfig
from bot.prompt import (
    SUMMARY_LEAD,
    SUMMARY_MAX_TOKENS,
    UNKNOWN_LANGUAGE,
    fit_history,
    guess_language,
    render_system_prompt,
)
from bot.types import ChatMessage, estimate_tokens
from conversations import services as chat_services
from conversations import usage
from conversations.models import Conversation, Customer, Turn
from conversations.replies import request_for_reply, write_reply
from inbox.models import Note
from knowledge.models import Article
from studio import runtime, services
from studio.models import Activation, ModelPrice, PromptVersion
from studio.selectors import active_version
from tests import personas
from tests.fixtures_fake_llm import answer_with_fake_model
from tests.fixtures_kb import indexed_article

pytestmark = pytest.mark.django_db

olivia_operator = personas.olivia_operator
alice_agent = personas.alice_agent
oscar_outsider = personas.oscar_outsider

QUESTION = "How do I recharge the Zephyr lantern battery?"


@pytest.fixture
def model(settings, fake_llm):
    return answer_with_fake_model(settings, fake_llm)


@pytest.fixture
def lantern(db) -> Article:
    return indexed_article(
        slug="lantern-charging",
        title="Recharging the Zephyr lantern",
        url="https://help.example.com/zephyr-lantern",
        body=(
            "To recharge the Zephyr lantern, plug its magnetic cable into any USB port. "
            "The ring glows amber while the lantern charges and turns green when it is full."
        ),
    )


def published(name: str = "v", by=None, **fields) -> PromptVersion:
    fields.setdefault("system_prompt", f"You are {name} of {{company}}.")
    return services.publish(services.create_draft(by=by, name=name, **fields), by=by)


def answered(text: str, conversation: Conversation | None = None) -> Turn:
    conversation = conversation or Conversation.objects.create(customer=Customer.objects.create())
    posted = chat_services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None
    write_reply(posted.reply.pk)
    return Turn.objects.get(pk=posted.reply.pk)


def system_prompt(request: dict) -> str:
    messages = request["body"]["messages"]
    assert messages[0]["role"] == "system"
    return str(messages[0]["content"])


# --- Immutability and drafts ----------------------------------------------------------------


def test_it_refuses_to_change_a_published_version():
    version = published("v1", temperature=0.2)
    version.system_prompt = "Something else entirely"
    with pytest.raises(ValidationError, match="published"):
        version.save()
    version.refresh_from_db()
    version.temperature = 1.5
    with pytest.raises(ValidationError):
        version.save()
    assert PromptVersion.objects.get(pk=version.pk).temperature == 0.2

    # A draft changes freely.
    draft = services.create_draft(by=None, name="d", system_prompt="one")
    draft.system_prompt = "two"
    draft.save()
    assert PromptVersion.objects.get(pk=draft.pk).system_prompt == "two"


def test_it_refuses_to_change_a_published_version_in_the_admin(olivia_operator):
    version = published("v1", system_prompt="Original prompt")
    client = Client()
    client.force_login(olivia_operator)
    page = client.get(f"/admin/studio/promptversion/{version.pk}/change/")
    assert page.status_code == 200
    assert 'name="system_prompt"' not in page.content.decode()  # read-only on the page
    client.post(
        f"/admin/studio/promptversion/{version.pk}/change/",
        {
            "name": "v1",
            "system_prompt": "Changed",
            "temperature": "1.0",
            "top_p": "1",
            "max_tokens": "10",
            "stop": "",
            "history_tokens": "10",
            "knowledge_tokens": "10",
        },
    )
    assert PromptVersion.objects.get(pk=version.pk).system_prompt == "Original prompt"
    # A draft's form is editable.
    draft = services.create_draft(by=None, name="d", system_prompt="x")
    page = client.get(f"/admin/studio/promptversion/{draft.pk}/change/")
    assert 'name="system_prompt"' in page.content.decode()


def test_it_makes_a_new_draft_from_a_published_version(olivia_operator):
    source = published("v1", model="gpt-4o-mini", temperature=0.7, stop=["###"])
    draft = services.create_draft(source, by=olivia_operator, temperature=0.1)
    assert draft.pk != source.pk and draft.parent == source
    assert draft.state == PromptVersion.State.DRAFT and not draft.is_active
    assert draft.created_by == olivia_operator
    assert draft.system_prompt == source.system_prompt and draft.stop == ["###"]
    assert draft.temperature == 0.1
    assert PromptVersion.objects.get(pk=source.pk).temperature == 0.7

    # Through the admin action.
    client = Client()
    client.force_login(olivia_operator)
    response = client.post(
        "/admin/studio/promptversion/",
        {"action": "edit_as_new_draft", "_selected_action": [source.pk], "reason": ""},
    )
    assert response.status_code == 302
    newest = PromptVersion.objects.exclude(pk__in=[source.pk, draft.pk]).get()
    assert newest.parent == source and newest.state == "draft"
    assert response["Location"].endswith(f"/admin/studio/promptversion/{newest.pk}/change/")


# --- Activation and rollback ----------------------------------------------------------------


def test_it_activates_and_rolls_back_with_who_when_and_why(olivia_operator):
    first, second = published("first"), published("second")
    before = timezone.now()
    services.activate(first, by=olivia_operator, reason="launch")
    services.activate(second, by=olivia_operator, reason="friendlier tone")
    assert active_version() == second
    assert list(PromptVersion.objects.filter(is_active=True)) == [second]

    record = services.rollback(by=olivia_operator, reason="customers complained")
    assert active_version() == first
    log = list(Activation.objects.order_by("id"))
    assert [(a.action, a.version, a.previous, a.reason) for a in log] == [
        ("activate", first, None, "launch"),
        ("activate", second, first, "friendlier tone"),
        ("rollback", first, second, "customers complained"),
    ]
    assert record == log[-1]
    assert all(a.by == olivia_operator and a.at >= before for a in log)


def test_it_has_nothing_to_roll_back_to_at_first_and_keeps_the_target_on_reactivation():
    with pytest.raises(services.NothingToRollBackTo):
        services.rollback(by=None, reason="oops")
    first, second = published("first"), published("second")
    services.activate(first, by=None)
    services.activate(second, by=None)
    services.activate(second, by=None, reason="clicked twice")
    services.rollback(by=None)
    assert active_version() == first


def test_it_creates_and_activates_a_default_version_from_the_settings(settings):
    settings.SYSTEM_PROMPT = "Default prompt of {company}."
    version = services.ensure_default_version()
    assert (version.name, version.state, version.is_active) == ("Default", "published", True)
    assert version.system_prompt == "Default prompt of {company}."
    assert Activation.objects.get().version == version
    assert services.ensure_default_version() == version  # once
    assert PromptVersion.objects.count() == 1


def test_it_activates_only_published_versions():
    draft = services.create_draft(by=None, name="d", system_prompt="x")
    with pytest.raises(services.NotPublished):
        services.activate(draft, by=None, reason="why not")
    assert not PromptVersion.objects.filter(is_active=True).exists()


def test_it_keeps_exactly_one_version_active_in_the_database():
    first, second = published("first"), published("second")
    services.activate(first, by=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        PromptVersion.objects.filter(pk=second.pk).update(is_active=True)
    services.activate(second, by=None)
    assert list(PromptVersion.objects.filter(is_active=True)) == [second]


def test_it_asks_for_a_reason_to_activate_a_version_that_scored_worse(monkeypatch):
    from studio import evaluation

    current, worse = published("current"), published("worse")
    services.activate(current, by=None)
    monkeypatch.setattr(
        evaluation, "gate", lambda v: "Scores 60% against 80%" if v == worse else None
    )
    with pytest.raises(services.GateBlocked, match="60%"):
        services.activate(worse, by=None)
    assert active_version() == current

    record = services.activate(worse, by=None, reason="the test set is outdated")
    assert record.gate_overridden and active_version() == worse


def test_it_publishes_activates_and_rolls_back_in_the_admin(olivia_operator):
    first = published("first")
    draft = services.create_draft(by=None, name="second", system_prompt="x")
    client = Client()
    client.force_login(olivia_operator)
    client.post(
        "/admin/studio/promptversion/",
        {"action": "activate_selected", "_selected_action": [draft.pk], "reason": "too early"},
    )
    assert not PromptVersion.objects.filter(is_active=True).exists()  # a draft can't go live
    client.post(
        "/admin/studio/promptversion/",
        {"action": "publish_selected", "_selected_action": [draft.pk], "reason": ""},
    )
    second = PromptVersion.objects.get(pk=draft.pk)
    assert second.state == "published" and second.published_at is not None
    for version, reason in ((first, "launch"), (second, "new tone")):
        response = client.post(
            "/admin/studio/promptversion/",
            {"action": "activate_selected", "_selected_action": [version.pk], "reason": reason},
        )
        assert response.status_code == 302
    assert active_version() == second
    client.post(
        "/admin/studio/promptversion/",
        {"action": "roll_back", "_selected_action": [second.pk], "reason": "too chatty"},
    )
    assert active_version() == first
    latest = Activation.objects.first()
    assert latest is not None
    assert (latest.action, latest.by, latest.reason) == ("rollback", olivia_operator, "too chatty")
    changelist = client.get("/admin/studio/promptversion/").content.decode()
    assert "first" in changelist and "icon-yes" in changelist  # the active one is marked
    assert client.get("/admin/studio/activation/").status_code == 200


# --- The bot uses the version ----------------------------------------------------------------


def test_it_answers_with_the_new_version_from_the_next_turn(model, lantern):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    before = answered(QUESTION, conversation)
    assert before.prompt_version is None  # no version yet: the built-in settings
    assert model.requests()[-1]["body"]["model"] == "fake-model"
    assert "top_p" not in model.requests()[-1]["body"]

    version = published(
        "crisp",
        system_prompt="You are Crisp of {company}. Be terse.",
        model="ft:gpt-4o-mini:acme::abc123",
        temperature=0.9,
        top_p=0.5,
        stop=["###"],
        max_tokens=77,
    )
    services.activate(version, by=None, reason="try crisp")
    # A question the article answers (how long charging takes, it doesn't say: the bot would
    # rightly abstain without asking the model).
    after = answered("How can I tell when the lantern is fully charged?", conversation)

    body = model.requests()[-1]["body"]
    assert system_prompt(model.requests()[-1]).startswith("You are Crisp of Brightwave. Be terse.")
    assert body["model"] == "ft:gpt-4o-mini:acme::abc123"  # a fine-tuned id just works
    assert (body["temperature"], body["top_p"], body["stop"], body["max_tokens"]) == (
        0.9,
        0.5,
        ["###"],
        77,
    )
    assert after.status == "done" and after.prompt_version == version
    assert Turn.objects.get(pk=before.pk).prompt_version is None


def test_a_version_that_names_its_provider_sets_its_own_model_budget(model, lantern, settings):
    settings.OPENAI_REQUESTS_PER_MIN = 0  # the environment's: no limit
    settings.REPLY_DEADLINE_S = 5
    version = published("metered", provider="openai", requests_per_min=1)
    services.activate(version, by=None, reason="a small account")

    first = answered(QUESTION)
    # One request a minute: the next turn is a minute away, past the reply's deadline.
    second = answered("How can I tell when the lantern is fully charged?")

    assert first.status == "done"
    assert (second.status, second.error_code) == ("failed", "over_budget")
    assert len(model.requests()) == 1
    assert runtime.config_for(version).requests_per_min == 1


def test_a_budget_needs_the_provider_it_belongs_to():
    with pytest.raises(ValidationError) as refused:
        services.create_draft(by=None, name="v", system_prompt="x", requests_per_min=100)
    assert "requests_per_min" in refused.value.message_dict
    with pytest.raises(ValidationError):
        services.create_draft(by=None, name="v", system_prompt="x", provider="offline",
                              tokens_per_min=0)  # fmt: skip
    named = services.create_draft(
        by=None, name="v", system_prompt="x", provider="openai", tokens_per_min=90_000
    )
    # A draft made from it keeps it: a budget is part of what a version sends.
    assert services.create_draft(named, by=None).tokens_per_min == 90_000


def test_it_records_each_turns_tokens_and_cost_from_the_price_table(model, lantern):
    ModelPrice.objects.create(
        model="gpt-4o-mini", input_per_million=Decimal("0.15"), output_per_million=Decimal("0.60")
    )
    ModelPrice.objects.create(
        model="fake-model", input_per_million=Decimal("2"), output_per_million=Decimal("8")
    )
    version = published("v")
    services.activate(version, by=None)
    reply = answered(QUESTION)
    assert len(model.requests()) == 1
    assert reply.prompt_tokens and reply.completion_tokens  # the server's usage report
    expected = (Decimal(reply.prompt_tokens) * 2 + Decimal(reply.completion_tokens) * 8) / 10**6
    assert reply.cost == expected and reply.prompt_version == version

    # A fine-tuned model without its own row is priced as its base model.
    assert bot_config.cost_of("ft:gpt-4o-mini:acme::x", 1_000_000, 0) == Decimal("0.15")
    # The offline answerer costs nothing without a price row.
    assert bot_config.cost_of("offline-bm25", 500, 500) == 0

    totals = usage.per_conversation(reply.conversation_id)
    assert (totals["turns"], totals["cost"]) == (1, expected)
    assert usage.per_version()[version.pk]["cost"] == expected
    ((_day, per_day),) = usage.per_day()
    assert per_day["cost"] == expected and per_day["turns"] == 1


def test_it_records_the_version_and_an_estimated_cost_with_the_offline_answerer(settings, lantern):
    settings.LLM_PROVIDER = "offline"
    settings.OFFLINE_WORD_DELAY_MS = 0
    ModelPrice.objects.create(
        model="offline-bm25", input_per_million=Decimal("1"), output_per_million=Decimal("1")
    )
    version = published("offline", provider="offline")
    services.activate(version, by=None)
    reply = answered(QUESTION)
    assert reply.status == "done" and reply.prompt_version == version
    assert reply.prompt_tokens and reply.completion_tokens
    assert reply.cost == Decimal(reply.prompt_tokens + reply.completion_tokens) / 10**6


# --- The system prompt template --------------------------------------------------------------


def test_it_fills_in_the_template_and_leaves_other_braces_alone(model, lantern):
    customer = Customer.objects.create(display_name="Ada {passages}")
    conversation = Conversation.objects.create(customer=customer)
    services.activate(
        published(
            "tpl",
            system_prompt=(
                "Hi {customer_name}! You speak for {company} in {language}. "
                'Reply as JSON {"answer": "..."} or {0} or {unknown} or {{x}} or { or }.\n'
                "Knowledge:\n{passages}\nEnd of knowledge."
            ),
        ),
        by=None,
    )
    reply = answered(
        "Wie kann ich die Zephyr lantern battery recharge? Ist das nicht einfach?", conversation
    )
    assert reply.status == "done"
    prompt = system_prompt(model.requests()[-1])
    assert prompt.startswith("Hi Ada passages! You speak for Brightwave in German. ")
    assert 'Reply as JSON {"answer": "..."} or {0} or {unknown} or {{x}} or { or }.' in prompt
    assert "{passages}" not in prompt
    # The passages sit where the template says, not appended after it.
    knowledge, end = prompt.split("Knowledge:\n", 1)[1].split("\nEnd of knowledge.")
    assert "[1] Recharging the Zephyr lantern" in knowledge or "No help-article" in knowledge
    assert end == ""


def test_it_renders_templates_safely_without_a_model():
    assert render_system_prompt("{company} {language} {customer_name}") == (
        "Brightwave the customer's language the customer"
    )
    assert render_system_prompt("{ {company}} {{company}}") == "{ Brightwave} {Brightwave}"
    assert guess_language("How do I reset my password?") == "English"
    assert guess_language("ok") == UNKNOWN_LANGUAGE


# --- Bounded context -------------------------------------------------------------------------

CUSTOMER_LINES = [
    "Hi, I bought the Zephyr lantern last week and it stopped charging after two days.",
    "I tried a different USB cable and a wall adapter but the ring still stays dark.",
    "Does the warranty cover this, and would I need the original receipt for it?",
    "How long does a replacement usually take to arrive if I live in Norway?",
]
BOT_LINE = (
    "Thanks for the details. Please hold the power button for ten seconds to reset the "
    "lantern, then plug it into a USB port for at least fifteen minutes. If the ring still "
    "stays dark, our warranty covers charging faults for two years from the date of purchase, "
    "and a replacement usually ships within three working days."
)


def prompt_tokens_at(conversation: Conversation, n: int, bot: BotConfig) -> int:
    """Add exchanges until the customer has written n messages; the estimated prompt of the
    n-th reply."""
    while Turn.objects.filter(conversation=conversation, author="customer").count() < n - 1:
        i = Turn.objects.filter(conversation=conversation).count()
        Turn.objects.create(
            conversation=conversation,
            author="customer",
            text=f"{CUSTOMER_LINES[i % 4]} (message {i})",
        )
        Turn.objects.create(conversation=conversation, author="bot", status="done", text=BOT_LINE)
    Turn.objects.create(conversation=conversation, author="customer", text=CUSTOMER_LINES[0])
    reply = Turn.objects.create(conversation=conversation, author="bot", status="queued")
    request = request_for_reply(reply, bot)
    reply.delete()
    return sum(estimate_tokens(m.content) for m in request.messages)


def test_it_keeps_the_prompt_bounded_however_long_the_conversation(settings):
    settings.CHAT_HISTORY_TURNS = 1000  # the token budget, not a turn count, must bound it
    bot = runtime.config_for(published("v", history_tokens=1000))
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    at_10 = prompt_tokens_at(conversation, 10, bot)
    with CaptureQueriesContext(connection) as queries_10:
        prompt_tokens_at(conversation, 10, bot)  # nothing to add: one more build
    at_50 = prompt_tokens_at(conversation, 50, bot)
    assert at_50 <= 1.2 * at_10, (at_10, at_50)

    reply = Turn.objects.create(conversation=conversation, author="bot", status="queued")
    with CaptureQueriesContext(connection) as queries_50:
        request = request_for_reply(reply, bot)
    assert len(queries_50) <= len(queries_10)  # one bounded history query
    system = request.messages[0].content
    assert SUMMARY_LEAD in system  # older turns summarised, not silently lost
    assert estimate_tokens(system.split(SUMMARY_LEAD)[1]) <= SUMMARY_MAX_TOKENS
    assert request.messages[-1] == ChatMessage("user", CUSTOMER_LINES[0])


def test_it_keeps_a_short_conversation_whole():
    messages = [ChatMessage("user", "one"), ChatMessage("assistant", "two")]
    assert fit_history(messages, 1000) == (messages, "")
    kept, summary = fit_history(
        [ChatMessage("user", "Where is my parcel? " * 40), ChatMessage("user", "Any news?")], 200
    )
    assert kept == [ChatMessage("user", "Any news?")]
    assert summary.startswith(SUMMARY_LEAD + "Where is my parcel")


# --- Fine-tuning export ----------------------------------------------------------------------


def conversation_with(rating: int | None, status: str = "resolved", with_reply: bool = True):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    Turn.objects.create(conversation=conversation, author="customer", text=f"Question {rating}")
    Turn.objects.create(conversation=conversation, author="system", text="Anna joined")
    Turn.objects.create(
        conversation=conversation, author="bot", status="failed", text="Sorry, technical problem"
    )
    if with_reply:
        Turn.objects.create(
            conversation=conversation, author="bot", status="done", text="Bot answer [1]."
        )
        Turn.objects.create(conversation=conversation, author="customer", text="Thanks, more?")
        Turn.objects.create(conversation=conversation, author="agent", text="Agent answer.")
    Note.objects.create(conversation=conversation, text="SECRET internal note")
    Conversation.objects.filter(pk=conversation.pk).update(
        status=status, rating=rating, resolved_at=timezone.now()
    )
    return conversation


def test_it_exports_rated_resolved_conversations_as_chat_jsonl(tmp_path: Path):
    version = published("v", system_prompt="You help {company} customers. {passages}")
    good = conversation_with(5)
    Turn.objects.filter(conversation=good, author="bot").update(prompt_version=version)
    conversation_with(4)
    conversation_with(3)  # rated too low
    conversation_with(5, status="open")  # not resolved
    conversation_with(5, with_reply=False)  # no assistant turn
    out = tmp_path / "finetune.jsonl"

    call_command("export_finetune", str(out))

    lines = out.read_text().splitlines()
    assert len(lines) == 2
    examples = [json.loads(line) for line in lines]  # each line is valid JSON
    for example in examples:
        assert set(example) == {"messages"}
        roles = [m["role"] for m in example["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        assert all(set(m) == {"role", "content"} and m["content"] for m in example["messages"])
    assert "SECRET" not in out.read_text() and "technical problem" not in out.read_text()
    assert "Anna joined" not in out.read_text()
    first = examples[0]["messages"]
    assert first[0]["content"] == "You help Brightwave customers."
    assert first[1]["content"] == "Question 5"
    assert first[2]["content"] == "Bot answer."  # citation markers removed
    assert first[4]["content"] == "Agent answer."
    assert examples[1]["messages"][0]["content"].startswith("You are the customer support")

    call_command("export_finetune", str(out), "--min-rating", "5")
    assert len(out.read_text().splitlines()) == 1


# --- Permissions -----------------------------------------------------------------------------

STUDIO_PAGES = [
    "/admin/studio/promptversion/",
    "/admin/studio/promptversion/add/",
    "/admin/studio/activation/",
    "/admin/studio/modelprice/",
    "/admin/studio/promptversion/export-finetune/",
]


def test_it_lets_only_operators_manage_versions(olivia_operator, alice_agent, oscar_outsider):
    version = published("v")
    conversation_with(5)
    operator = Client()
    operator.force_login(olivia_operator)
    for page in STUDIO_PAGES:
        assert operator.get(page).status_code == 200, page
    export = operator.get("/admin/studio/promptversion/export-finetune/")
    assert json.loads(b"".join(export.streaming_content).splitlines()[0])["messages"]

    for user in (alice_agent, oscar_outsider):
        client = Client()
        client.force_login(user)
        for page in STUDIO_PAGES:
            assert client.get(page).status_code == 403, (user, page)
        response = client.post(
            "/admin/studio/promptversion/",
            {"action": "activate_selected", "_selected_action": [version.pk], "reason": "x"},
        )
        assert response.status_code == 403
    assert not PromptVersion.objects.filter(is_active=True).exists()

    customer = Client()  # a visitor: not staff, sees nothing but the login page
    for page in STUDIO_PAGES:
        response = customer.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
