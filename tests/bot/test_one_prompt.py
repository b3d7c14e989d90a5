"""One prompt, whoever asks: a customer's reply, the playground, an evaluation case made from
the conversation, agent assist's suggested reply and eval_kb send the model the same request
for the same prompt version and conversation (bot/prompt.py builds all of them). Each request
is read where it arrives: the fake OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import pytest

from bot.evaluation import answer_question
from conversations import services as chat_services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from inbox import assist
from studio import evaluation, playground
from studio import services as studio_services
from studio.models import TestSet as CaseSet
from tests.fixtures_fake_llm import answer_with_fake_model
from tests.fixtures_kb import indexed_article

pytestmark = pytest.mark.django_db

FIRST_QUESTION = "How do I recharge the Zephyr lantern?"
FOLLOW_UP = "How long does it take to charge it?"


@pytest.fixture
def model(settings, fake_llm):
    answer_with_fake_model(settings, fake_llm)
    indexed_article(
        slug="lantern-charging",
        title="Recharging the Zephyr lantern",
        url="https://help.example.com/zephyr-lantern",
        body=(
            "To recharge the Zephyr lantern, plug its magnetic cable into any USB port. "
            "A full charge takes about three hours; the ring glows green when it is full."
        ),
    )
    return fake_llm


@pytest.fixture
def version():
    """An active version unlike the built-in default in everything a request carries."""
    draft = studio_services.create_draft(
        by=None,
        name="careful",
        system_prompt="You help {customer_name} for {company}. Reply in {language}.\n{passages}",
        model="careful-model",
        temperature=0.1,
        max_tokens=321,
        history_tokens=900,
        knowledge_tokens=400,
    )
    published = studio_services.publish(draft, by=None)
    studio_services.activate(published, by=None, allow_worse=True)
    return published


def conversation_with_a_follow_up(model) -> tuple[Conversation, Turn]:
    """Alice asked, the bot answered (citing [1]), and she asks again: her reply is queued."""
    alice = Customer.objects.create(display_name="Alice")
    conversation = Conversation.objects.create(customer=alice)
    first = chat_services.post_customer_message(conversation, "m-1", FIRST_QUESTION)
    write_reply(first.reply.pk)
    assert "[1]" in Turn.objects.get(pk=first.reply.pk).text
    second = chat_services.post_customer_message(conversation, "m-2", FOLLOW_UP)
    return conversation, second.reply


def sent(model) -> dict:
    """What the last request to the model carried, besides the streaming options."""
    body = model.requests()[-1]["body"]
    return {name: body.get(name) for name in ("model", "messages", "temperature", "max_tokens")}


def test_it_sends_the_same_request_from_replies_playground_evaluations_and_assist(model, version):
    conversation, reply = conversation_with_a_follow_up(model)

    write_reply(reply.pk)
    from_reply = sent(model)
    playground.answer(
        version,
        playground.conversation_messages(str(conversation.pk), ""),
        conversation_id=conversation.pk,
    )
    from_playground = sent(model)
    case = evaluation.case_from_conversation(conversation, CaseSet.objects.create(name="t"))
    evaluation.run_case(version, case)
    from_evaluation = sent(model)
    suggestion = assist.suggestion(conversation)
    from_assist = sent(model)

    assert from_reply["model"] == "careful-model" and from_reply["max_tokens"] == 321
    system = from_reply["messages"][0]["content"]
    assert system.startswith("You help Alice for ") and "Zephyr" in system  # passages in
    assert [m["role"] for m in from_reply["messages"]] == ["system", "user", "assistant", "user"]
    assert "[1]" not in from_reply["messages"][2]["content"]  # earlier citations stripped
    assert from_playground == from_reply
    assert from_evaluation == from_reply
    assert from_assist == from_reply and suggestion.text


def test_eval_kb_asks_a_question_as_a_reply_to_a_one_message_conversation_would(model, version):
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name=""))
    posted = chat_services.post_customer_message(conversation, "m-1", FIRST_QUESTION)
    write_reply(posted.reply.pk)
    from_reply = sent(model)

    answer_question(FIRST_QUESTION)

    assert sent(model) == from_reply and from_reply["model"] == "careful-model"
