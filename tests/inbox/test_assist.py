"""Agent assist on multi-topic conversations (inbox/assist.py, bot/assist.py): the summary leads
with the customer's latest open problem, not the first message; the suggested reply answers
that problem from the article retrieved for it and cites it; both go through the bot's prompt
pipeline with the conversation's prompt version. Requests are read where they arrive: the fake
OpenAI-compatible server, over real HTTP (tests/fake_llm.py)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from conversations import services as chat_services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from inbox import assist, services
from inbox import tasks as inbox_tasks
from inbox.models import Note
from studio import services as studio_services
from tests import personas
from tests.conftest import open_chat, receive_until
from tests.fixtures_fake_llm import answer_with_fake_model
from tests.fixtures_kb import demo_kb
from tests.inbox.test_inbox_socket import agent_socket, nothing_more

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
demo_kb = demo_kb  # a fixture (tests/fixtures_kb.py)

DELIVERY = "Where is my parcel? I ordered a smart plug last week and it hasn't arrived."
REFUND = "How do I get a refund for an order I returned?"
BROKEN = "Now that the plug arrived it is faulty: it no longer switches on. Is that covered?"
WARRANTY_URL = "https://help.brightwave.example/warranty"


def say(conversation: Conversation, message_id: str, text: str, *, answer: bool = True) -> None:
    """The customer writes; the bot answers (with whichever provider is configured)."""
    posted = chat_services.post_customer_message(conversation, message_id, text)
    if answer and posted.reply is not None:
        write_reply(posted.reply.pk)


def multi_topic(*, answer_last: bool = True) -> Conversation:
    """Delivery first, then a refund, then a broken plug: three topics, the plug the latest."""
    conversation = Conversation.objects.create(
        customer=Customer.objects.create(display_name="Alice")
    )
    say(conversation, "m-1", DELIVERY)
    say(conversation, "m-2", REFUND)
    say(conversation, "m-3", BROKEN, answer=answer_last)
    return conversation


def sent(model) -> dict:
    return model.requests()[-1]["body"]


def activate(name: str, model_name: str, prompt: str, **fields):
    draft = studio_services.create_draft(
        by=None, name=name, system_prompt=prompt, model=model_name, **fields
    )
    published = studio_services.publish(draft, by=None)
    studio_services.activate(published, by=None, allow_worse=True)
    return published


@pytest.fixture
def model(settings, fake_llm, demo_kb):
    return answer_with_fake_model(settings, fake_llm)


@pytest.fixture
def version(model):
    return activate(
        "careful",
        "careful-model",
        "You help {customer_name} for {company}, careful version. Reply in {language}.\n{passages}",
        temperature=0.1,
        max_tokens=321,
    )


# --- The offline answerer: an extractive summary by the same rule ------------------------------


@pytest.mark.django_db
def test_it_leads_the_summary_with_the_latest_problem_not_the_first_message(demo_kb):
    conversation = multi_topic()

    summary = assist.run_assist(conversation.pk, "summary").text

    lines = summary.splitlines()
    assert lines[0].startswith("Latest problem: Now that the plug arrived it is faulty")
    assert lines[1] == "Answered since, but still open."
    earlier = lines[lines.index("Earlier topics:") + 1 :]
    # Newest first: the refund, then the delivery the conversation began with.
    assert earlier[0] == f"- {REFUND}" and earlier[1].startswith("- Where is my parcel?")
    assert lines[-1].startswith("Status: Open")


@pytest.mark.django_db
def test_it_says_when_nobody_has_answered_the_latest_problem(demo_kb):
    conversation = multi_topic(answer_last=False)
    summary = assist.run_assist(conversation.pk, "summary").text
    assert summary.splitlines()[:2] == [f"Latest problem: {BROKEN}", "Nobody has answered it yet."]


@pytest.mark.django_db
def test_it_keeps_a_follow_up_with_its_topic_and_skips_small_talk(demo_kb):
    conversation = multi_topic()
    say(conversation, "m-4", "How long does that take?")
    say(conversation, "m-5", "thanks!")

    summary = assist.run_assist(conversation.pk, "summary").text

    assert summary.splitlines()[0] == f"Latest problem: {BROKEN} How long does that take?"
    assert "thanks" not in summary


@pytest.mark.django_db
def test_it_has_no_open_problem_once_the_conversation_was_resolved(demo_kb, alice_agent):
    conversation = multi_topic()
    services.take_over(conversation.pk, alice_agent)
    services.resolve(conversation.pk, alice_agent)

    summary = assist.run_assist(conversation.pk, "summary").text

    assert summary.splitlines()[0] == f"No open problem: the last one was resolved ({BROKEN})."
    assert f"- {REFUND}" in summary


@pytest.mark.django_db
def test_a_question_after_the_resolution_is_the_open_problem(demo_kb, alice_agent):
    conversation = multi_topic()
    services.take_over(conversation.pk, alice_agent)
    services.resolve(conversation.pk, alice_agent)
    say(conversation, "m-4", "How do I reset my password?", answer=False)

    summary = assist.run_assist(conversation.pk, "summary").text

    assert summary.splitlines()[:2] == [
        "Latest problem: How do I reset my password?",
        "Nobody has answered it yet.",
    ]


@pytest.mark.django_db
def test_reopening_opens_the_last_problem_again(demo_kb, alice_agent):
    conversation = multi_topic()
    services.take_over(conversation.pk, alice_agent)
    services.resolve(conversation.pk, alice_agent)
    services.reopen(conversation.pk, alice_agent)

    summary = assist.run_assist(conversation.pk, "summary").text

    assert summary.splitlines()[0] == f"Latest problem: {BROKEN}"


@pytest.mark.django_db
def test_it_suggests_a_reply_to_the_latest_problem_citing_its_article(demo_kb):
    conversation = multi_topic(answer_last=False)

    suggestion = assist.run_assist(conversation.pk, "suggest")

    assert suggestion.text and "warranty" in suggestion.text.lower()
    assert {(s["title"], s["url"]) for s in suggestion.sources} == {
        (demo_kb["warranty"].title, WARRANTY_URL)
    }
    # A draft for the agent: nothing went to the customer.
    assert not Turn.objects.filter(conversation=conversation, author="agent").exists()


@pytest.mark.django_db
def test_it_answers_the_problem_when_only_small_talk_came_after_it(demo_kb):
    conversation = multi_topic(answer_last=False)
    say(conversation, "m-4", "hello??", answer=False)

    suggestion = assist.run_assist(conversation.pk, "suggest")

    assert [s["url"] for s in suggestion.sources] == [WARRANTY_URL]


@pytest.mark.django_db
def test_it_reads_a_long_conversation_in_a_fixed_number_of_queries(
    demo_kb, django_assert_max_num_queries
):
    conversation = multi_topic()
    Turn.objects.bulk_create(
        Turn(conversation=conversation, author=author, text=f"{author} message {i}", status=status)
        for i in range(150)
        for author, status in (("customer", ""), ("bot", "done"))
    )
    # The conversation, the newest turns, the first message and how many turns lie between.
    with django_assert_max_num_queries(4):
        summary = assist.run_assist(conversation.pk, "summary")
    assert "Where is my parcel?" in summary.text  # the first message is never clipped away


# --- A model: the conversation's prompt version, through the bot's pipeline --------------------


@pytest.mark.django_db
def test_it_summarises_with_the_active_versions_model_and_system_prompt(model, version):
    conversation = multi_topic(answer_last=False)

    summary = assist.run_assist(conversation.pk, "summary")

    body = sent(model)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("careful-model", 0.1, 321)
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert system.startswith("You help Alice for ") and "careful version." in system
    assert "summarise" in system.lower() and "{passages}" not in system
    assert "Reply in English." in system  # for the team, whatever the customer writes in
    # The latest problem leads; the whole conversation follows, the first message included.
    assert user.startswith(f"The customer's latest open problem: {BROKEN}")
    assert user.index(REFUND) < user.index("The conversation, oldest first:")
    transcript = user[user.index("The conversation, oldest first:") :]
    assert transcript.index(DELIVERY) < transcript.index(REFUND) < transcript.index(BROKEN)
    assert summary.text  # the model's words


@pytest.mark.django_db
def test_it_suggests_with_the_active_version_and_cites_the_article(model, version):
    conversation = multi_topic(answer_last=False)

    suggestion = assist.run_assist(conversation.pk, "suggest")

    body = sent(model)
    assert (body["model"], body["max_tokens"]) == ("careful-model", 321)
    system = body["messages"][0]["content"]
    assert system.startswith("You help Alice for ") and "What does the warranty cover?" in system
    assert body["messages"][-1] == {"role": "user", "content": BROKEN}
    assert "[1]" in suggestion.text
    assert suggestion.sources[0]["url"] == WARRANTY_URL
    assert suggestion.sources[0]["title"] == "What does the warranty cover?"


@pytest.mark.django_db
def test_a_version_switch_changes_what_assist_uses(model, version):
    conversation = multi_topic(answer_last=False)
    assist.run_assist(conversation.pk, "summary")
    assert sent(model)["model"] == "careful-model"

    activate("brisk", "brisk-model", "Brisk helper of {company}.", temperature=0.7)
    assist.run_assist(conversation.pk, "summary")
    body = sent(model)
    assert body["model"] == "brisk-model" and body["temperature"] == 0.7
    assert body["messages"][0]["content"].startswith("Brisk helper of ")
    assist.run_assist(conversation.pk, "suggest")
    assert sent(model)["model"] == "brisk-model"


@pytest.mark.django_db
def test_without_a_version_assist_uses_the_configured_model(model):
    conversation = multi_topic(answer_last=False)
    assist.run_assist(conversation.pk, "summary")
    assert sent(model)["model"] == "fake-model"  # OPENAI_MODEL: the built-in default


@pytest.mark.django_db
def test_it_never_gives_the_model_an_internal_note(model, version, alice_agent):
    conversation = multi_topic(answer_last=False)
    services.add_note(conversation.pk, alice_agent, "VIP: refund code ZX-4411, do not share")

    assist.run_assist(conversation.pk, "summary")
    assist.run_assist(conversation.pk, "suggest")

    requests = model.requests()[-2:]
    assert len(requests) == 2
    assert all("ZX-4411" not in str(r["body"]["messages"]) for r in requests)


@pytest.mark.django_db(transaction=True)
async def test_a_failing_model_gives_the_agent_an_assist_error_and_stores_nothing(
    model, version, alice_agent, bob_agent
):
    conversation = await database_sync_to_async(multi_topic)(answer_last=False)
    customer = await open_chat(conversation.pk, conversation.customer)
    alice = await agent_socket(alice_agent)
    bob = await agent_socket(bob_agent)
    turns_before = await Turn.objects.filter(conversation=conversation).acount()
    model.set_fault("401", times=-1)

    for kind in ("summary", "suggest"):
        await database_sync_to_async(inbox_tasks.assist, thread_sensitive=False)(
            str(conversation.pk), alice_agent.pk, kind
        )
        frame = (await receive_until(alice, lambda f: f["type"] == "assist"))[-1]
        assert frame["kind"] == kind and frame["text"] == "" and frame["sources"] == []
        assert frame["code"] == "model_unavailable" and frame["error"] == assist.MODEL_REFUSED

    assert model.requests()[-1]["body"]["model"] == "careful-model"
    assert await Turn.objects.filter(conversation=conversation).acount() == turns_before
    assert not await Note.objects.filter(conversation=conversation).aexists()
    await nothing_more(bob)
    await nothing_more(customer)
    for socket in (customer, alice, bob):
        await socket.disconnect()


@pytest.mark.django_db
def test_a_model_outage_asks_the_agent_to_try_again(model, version):
    conversation = multi_topic(answer_last=False)
    model.set_fault("500", times=-1)

    frame = assist.assist_frame(conversation.pk, "suggest")

    assert (frame["code"], frame["error"]) == ("model_unavailable", assist.MODEL_DOWN)
    assert frame["text"] == "" and frame["sources"] == []
    assert model.requests()[-1]["body"]["model"] == "careful-model"


@pytest.mark.django_db
def test_assist_on_a_deleted_conversation_says_so(demo_kb):
    conversation = multi_topic()
    gone = conversation.pk
    conversation.delete()
    frame = assist.assist_frame(gone, "summary")
    assert (frame["code"], frame["error"]) == ("not_found", assist.GONE)
