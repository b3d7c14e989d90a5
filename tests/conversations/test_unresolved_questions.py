"""Operators review the questions the bot didn't resolve and teach retrieval from them
(conversations.UnresolvedQuestion in the admin, knowledge.ExampleQuestion)."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from knowledge.models import ExampleQuestion
from knowledge.search import min_confidence, search
from tests import fixtures_kb, personas

ADMIN = "/admin/conversations/unresolvedquestion/"
TO_A_PERSON = "can i talk to an actual person instead of the bot"
OTHER_BRAND = "how do i cancel my spotify subscription"


demo_kb = fixtures_kb.demo_kb


olivia_operator = personas.olivia_operator
alice_agent = personas.alice_agent


def bot_reply(text: str, conversation: Conversation | None = None) -> Turn:
    conversation = conversation or Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None
    write_reply(posted.reply.pk)
    posted.reply.refresh_from_db()
    return posted.reply


def ask_for_a_person(conversation: Conversation) -> None:
    posted = services.post_customer_message(
        conversation, f"c-{Turn.objects.count()}", "this didn't help, i want to talk to a human"
    )
    assert posted.reply is None
    conversation.refresh_from_db()
    assert conversation.escalation_reason == Conversation.Escalation.CUSTOMER_REQUEST


def answers(question: str) -> bool:
    hits = search(question, 1)
    return bool(hits) and hits[0].confidence >= min_confidence()


@pytest.mark.django_db
def test_it_lists_the_questions_the_bot_could_not_answer_but_not_the_ones_it_did(
    demo_kb, client, olivia_operator
):
    unanswered = bot_reply("<b>is there a recipe for banana bread</b>")
    answered = bot_reply("how do i return an item")
    assert unanswered.abstained and not answered.abstained

    client.force_login(olivia_operator)
    response = client.get(ADMIN)

    assert response.status_code == 200
    assert [turn.pk for turn in response.context["cl"].result_list] == [unanswered.pk]
    page = response.content.decode()
    assert "&lt;b&gt;is there a recipe for banana bread&lt;/b&gt;" in page  # shown inert
    assert f"/admin/conversations/conversation/{unanswered.conversation_id}/change/" in page


@pytest.mark.django_db
def test_it_lists_the_last_answer_before_the_customer_asked_for_a_person(
    demo_kb, client, olivia_operator
):
    earlier = bot_reply("how do i return an item")
    look_alike = bot_reply(OTHER_BRAND, earlier.conversation)
    assert not look_alike.abstained
    unrelated = bot_reply("how do i track my order")  # answered, nobody asked for a person
    ask_for_a_person(look_alike.conversation)

    client.force_login(olivia_operator)
    response = client.get(ADMIN)

    assert [turn.pk for turn in response.context["cl"].result_list] == [look_alike.pk]
    assert unrelated.pk not in [turn.pk for turn in response.context["cl"].result_list]
    page = response.content.decode()
    assert "then the customer asked for a person" in page
    assert demo_kb["brightwave-plus"].title in page  # what it answered from
    couldnt = client.get(ADMIN, {"bot": "abstained"})
    assert list(couldnt.context["cl"].result_list) == []


@pytest.mark.django_db
def test_teaching_an_article_makes_similar_questions_answered_from_it(
    demo_kb, client, olivia_operator, django_capture_on_commit_callbacks
):
    reply = bot_reply(TO_A_PERSON)
    assert reply.abstained and not answers(TO_A_PERSON)
    client.force_login(olivia_operator)
    contact = demo_kb["contact-support"]
    form = {"action": "teach_article", ACTION_CHECKBOX_NAME: [reply.pk]}

    chooser = client.post(ADMIN, form)
    assert chooser.status_code == 200 and TO_A_PERSON in chooser.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        taught = client.post(ADMIN, {**form, "apply": "1", "article": contact.pk})

    assert taught.status_code == 302
    example = ExampleQuestion.objects.get()
    assert (example.text, example.article, example.source) == (
        TO_A_PERSON,
        contact,
        ExampleQuestion.Source.CONVERSATION,
    )
    assert example.embedding
    assert answers("could i chat with a real person rather than the bot")
    assert contact.title in client.get(ADMIN).content.decode()  # the row shows its teaching


def confidence(question: str) -> float:
    hits = search(question, 1)
    return hits[0].confidence if hits else 0.0


@pytest.mark.django_db
def test_teaching_hand_over_makes_rewordings_of_the_question_less_likely_to_be_answered(
    demo_kb, client, olivia_operator, django_capture_on_commit_callbacks
):
    reply = bot_reply("how do i unsubscribe from amazon prime")
    assert reply.abstained
    reworded = "how can i cancel my amazon prime"  # examples are read by rewordings only
    before = confidence(reworded)
    client.force_login(olivia_operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            ADMIN, {"action": "teach_unanswerable", ACTION_CHECKBOX_NAME: [reply.pk]}
        )

    assert response.status_code == 302
    assert ExampleQuestion.objects.get().is_unanswerable
    assert confidence(reworded) < before - 0.05
    assert "hand over" in client.get(ADMIN).content.decode()


@pytest.mark.django_db
def test_an_agent_cannot_review_or_teach(demo_kb, client, alice_agent):
    reply = bot_reply(TO_A_PERSON)
    client.force_login(alice_agent)
    assert client.get(ADMIN).status_code == 403
    response = client.post(
        ADMIN, {"action": "teach_unanswerable", ACTION_CHECKBOX_NAME: [reply.pk]}
    )
    assert response.status_code == 403
    assert not ExampleQuestion.objects.exists()


@pytest.mark.django_db
def test_the_review_page_reads_the_labels_in_one_query_however_many_rows(
    demo_kb, client, olivia_operator, django_assert_max_num_queries
):
    for n in range(3):
        bot_reply(f"is there a recipe for banana bread number {n}")
    client.force_login(olivia_operator)
    client.get(ADMIN)  # warm the session and permission caches
    with django_assert_max_num_queries(12) as three:
        client.get(ADMIN)
    for n in range(3, 9):
        bot_reply(f"is there a recipe for banana bread number {n}")
    with django_assert_max_num_queries(len(three.captured_queries)):
        client.get(ADMIN)
