"""A worker loads what replies need before it takes its first task (bot.run.warm_up, called by
support_bot/celery.py when the worker starts), so the first customer after a (re)start does not
wait ~0.5 s for the language identifier and the model's client to load; a web process builds
the model's client as it starts (support_bot/asgi.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from py3langid.langid import LanguageIdentifier

from bot import run
from bot.providers import registry
from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from knowledge import language
from tests.conftest import ROOT, child_env
from tests.fixtures_fake_llm import answer_with_fake_model
from tests.fixtures_kb import indexed_article


def not_loaded_again(*_args, **_kwargs):
    raise AssertionError("loaded while a customer waits")


@pytest.mark.django_db
def test_after_warming_up_a_first_reply_loads_nothing(settings, fake_llm, monkeypatch):
    answer_with_fake_model(settings, fake_llm)
    indexed_article(
        slug="parcel-tracking",
        title="Where is my parcel?",
        body="Every parcel has a tracking link in its shipping email; it updates within a day.",
    )
    monkeypatch.setattr(language, "_identifier", None)  # as in a process just started
    monkeypatch.setattr(registry, "_cached", None)
    monkeypatch.setattr(registry, "_named", {})

    run.warm_up()

    monkeypatch.setattr(LanguageIdentifier, "from_model_file", not_loaded_again)
    monkeypatch.setattr(registry, "_build", not_loaded_again)
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    question = "Where is my parcel? It has not come yet."
    asked = services.post_customer_message(conversation, "c-1", question)
    assert asked.reply is not None
    write_reply(asked.reply.pk)
    assert Turn.objects.get(pk=asked.reply.pk).status == "done"
    assert len(fake_llm.requests()) == 1  # the model was asked


@pytest.mark.worker
def test_a_worker_is_ready_to_answer_before_it_takes_tasks(celery_worker):
    worker = celery_worker(threads=1)
    lines = worker.output
    warmed = next(i for i, line in enumerate(lines) if "ready to answer" in line)
    ready = next(i for i, line in enumerate(lines) if " ready." in line)
    assert warmed < ready


def test_a_web_process_builds_what_taking_a_message_uses_as_it_starts():
    shows_provider = (
        "import support_bot.asgi\n"
        "from bot.providers import registry\n"
        "from channels.layers import channel_layers\n"
        "from support_bot.celery import app\n"
        "built = registry._cached is not None, bool(channel_layers.backends), app.finalized\n"
        "print('built:', *built)\n"
    )
    env = child_env(
        LLM_PROVIDER="openai", OPENAI_API_KEY="sk-test", OPENAI_BASE_URL="http://127.0.0.1:9/v1"
    )
    started = subprocess.run(
        [sys.executable, "-c", shows_provider],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "built: True True True" in started.stdout, started.stderr[-2000:]
