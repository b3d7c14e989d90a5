"""Example questions: operators teach retrieval how customers word a question, and which
questions it must not answer (knowledge.ExampleQuestion and the ranker's example features)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bot.evaluation import bot_answerer
from knowledge.evaluation import evaluate, read_question_sets, read_questions
from knowledge.indexing import sync_example_questions
from knowledge.language import question_key
from knowledge.models import Article, ExampleQuestion
from knowledge.search import knowledge_index, min_confidence, search
from knowledge.search.index import knowledge_base_signature
from knowledge.services import (
    DEMO_DIR,
    DEMO_EXAMPLE_SETS,
    import_example_questions,
)
from tests import fixtures_kb, personas

#: Question sets kept out of the demo's examples and the ranker's training, to measure them.
HELD_OUT = (DEMO_DIR / "holdout.jsonl", DEMO_DIR / "holdout2.jsonl")
ADMIN = "/admin/knowledge/examplequestion/"

# Asked in words no article uses: the articles alone leave the bot unsure (it hands over).
TO_A_PERSON = "can i talk to an actual person instead of the bot"
# Another company's subscription: the articles alone answer it with BrightWave Plus.
OTHER_BRAND = "how do i cancel my spotify subscription"


demo_kb = fixtures_kb.demo_kb


def top(question: str) -> tuple[str, float]:
    hits = search(question, 3)
    assert hits, question
    return Article.objects.get(id=hits[0].article_id).slug, hits[0].confidence


def add_example(text: str, article: Article | None) -> ExampleQuestion:
    example = ExampleQuestion.objects.create(text=text, article=article)
    sync_example_questions()
    return example


def answers(question: str) -> bool:
    return top(question)[1] >= min_confidence()


# --- What examples do to answers ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_question_worded_like_an_example_is_answered_from_the_examples_article(demo_kb):
    slug, _ = top(TO_A_PERSON)
    assert slug == "contact-support" and not answers(TO_A_PERSON)

    add_example("can I speak to a real person rather than the bot", demo_kb["contact-support"])

    assert top(TO_A_PERSON)[0] == "contact-support" and answers(TO_A_PERSON)


@pytest.mark.django_db
def test_a_question_like_an_unanswerable_example_is_handed_over(demo_kb):
    assert top(OTHER_BRAND)[0] == "brightwave-plus" and answers(OTHER_BRAND)

    add_example("how do i cancel my netflix subscription", None)

    assert not answers(OTHER_BRAND)
    # Our own subscription is still answered.
    own = "how do i cancel my brightwave plus subscription"
    assert top(own)[0] == "brightwave-plus" and answers(own)


@pytest.mark.django_db
def test_relabelling_or_deleting_an_example_applies_from_the_next_question(demo_kb):
    example = add_example("how do i cancel my netflix subscription", None)
    assert not answers(OTHER_BRAND)

    example.article = demo_kb["brightwave-plus"]
    example.save()
    assert answers(OTHER_BRAND)

    example.article = None
    example.save()
    assert not answers(OTHER_BRAND)
    example.delete()
    assert answers(OTHER_BRAND)


@pytest.mark.django_db
def test_an_example_of_an_unpublished_article_is_not_evidence(demo_kb):
    contact = demo_kb["contact-support"]
    add_example("can I speak to a real person rather than the bot", contact)
    assert answers(TO_A_PERSON)

    contact.published = False
    contact.save()

    assert top(TO_A_PERSON)[0] != "contact-support"


@pytest.mark.django_db
def test_a_few_examples_do_not_pull_other_articles_questions_to_theirs(demo_kb):
    """With examples for a handful of articles only, questions about the other articles still
    find their own (the ranker was trained with all, a few and no examples)."""
    taught = {"contact-support", "create-account", "damaged-or-missing-items"}
    questions = [
        q for path in HELD_OUT for q in read_questions(path) if q.expected not in taught | {"none"}
    ]
    before = sum(top(q.question)[0] == q.expected for q in questions)
    import_example_questions(
        [
            ("i want to speak to a real human, not a robot", "contact-support"),
            ("can i order without creating an account", "create-account"),
            ("my parcel never turned up", "damaged-or-missing-items"),
            ("how do i cancel my netflix subscription", "none"),
        ]
    )
    sync_example_questions()
    after = sum(top(q.question)[0] == q.expected for q in questions)
    assert after >= before


# --- The demo's examples and the quality goal --------------------------------------------------


def held_out_figures() -> tuple[float, float, float]:
    """hit@1, abstention precision and recall on the held-out questions, as eval_kb measures
    them (the offline answerer decides abstention)."""
    report = evaluate(read_question_sets(HELD_OUT), bot_answerer("offline"))
    return report.hit_at(1), report.abstention_precision, report.abstention_recall


@pytest.mark.django_db
def test_an_example_on_another_subject_leaves_a_question_ranked_as_without_examples(demo_kb):
    """Teaching must only help: an example is read only by questions that reword it
    (KB_EXAMPLE_COVERS), so one far from a question changes nothing about its answer."""
    question = "where can I see how far my parcel has got"

    def ranked() -> list[tuple[int, float]]:
        return [(hit.article_id, round(hit.confidence, 6)) for hit in search(question, 3)]

    before = ranked()
    add_example("do you deliver to the Channel Islands", demo_kb["order-tracking"])
    add_example("can I pay with a gift card from another shop", None)
    assert ranked() == before


@pytest.mark.django_db
def test_an_example_that_rewords_a_question_is_read_by_it(demo_kb):
    question = "where can I see how far my parcel has got"
    assert answers(question)
    add_example("where can I see how far my parcel has got to?", None)  # a "none" rewording
    assert not answers(question)


@pytest.mark.django_db
@pytest.mark.default_pass_only(reason="answer quality, which the database engine does not change")
def test_with_the_demo_examples_it_meets_the_quality_goal_on_held_out_questions(demo_kb, settings):
    """The issue's goal: hit@1 >= 0.9, abstention precision and recall >= 0.9. The 320
    held-out questions are neither the demo's examples nor the ranker's training, and were
    written from the articles alone by people who saw neither. Measured: hit@1 0.83 -> 0.93,
    precision 0.72 -> 0.92, recall 0.73 -> 0.97."""
    settings.OFFLINE_WORD_DELAY_MS = 0  # as eval_kb answers: no typing pace
    hit_before, precision_before, recall_before = held_out_figures()
    call_command("load_demo_kb", stdout=StringIO())
    knowledge_index.invalidate()

    hit, precision, recall = held_out_figures()

    assert hit >= 0.9 > hit_before
    assert precision >= 0.9 > precision_before
    assert recall >= 0.9 > recall_before


@pytest.mark.django_db
def test_load_demo_kb_loads_the_demo_examples_but_never_the_held_out_questions(demo_kb):
    out = StringIO()
    call_command("load_demo_kb", stdout=out)
    expected = {q.question for name in DEMO_EXAMPLE_SETS for q in read_questions(DEMO_DIR / name)}
    stored = set(ExampleQuestion.objects.values_list("key", flat=True))
    assert stored == {question_key(q) for q in expected}  # the same question once, in any case
    held_out = {question_key(q.question) for path in HELD_OUT for q in read_questions(path)}
    assert not stored & (held_out - {question_key(q) for q in expected})
    assert ExampleQuestion.objects.filter(embedding__isnull=True).count() == 0
    assert "Example questions:" in out.getvalue()

    call_command("load_demo_kb", stdout=(again := StringIO()))
    assert "Example questions: 0 created, 0 relabelled" in again.getvalue()  # nothing doubled
    assert ExampleQuestion.objects.count() == len(stored)


@pytest.mark.django_db
def test_eval_kb_leaves_out_an_example_identical_to_the_question(demo_kb, tmp_path):
    add_example(TO_A_PERSON.upper(), demo_kb["contact-support"])  # same question, other case
    assert answers(TO_A_PERSON)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": TO_A_PERSON, "expected": "contact-support"}))

    report = evaluate(read_questions(questions), bot_answerer("offline"))

    assert report.outcomes[0].abstained  # as without the example: it was the answer key
    assert answers(TO_A_PERSON)  # outside the evaluation it is evidence again
    assert report.examples_left_out == 1
    out = StringIO()
    call_command("eval_kb", str(questions), stdout=out)
    assert "1 example question; 1 question(s) are example questions themselves" in out.getvalue()

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "where is my parcel", "expected": "order-tracking"}))
    out = StringIO()
    call_command("eval_kb", str(other), stdout=out)
    assert "example questions themselves" not in out.getvalue()  # only said when it happened


# --- Storing and importing -------------------------------------------------------------------


@pytest.mark.django_db
def test_it_embeds_an_example_once_and_again_when_its_text_changes(demo_kb):
    example = ExampleQuestion.objects.create(text="where's my stuff", article=None)
    assert sync_example_questions() == 1
    first = bytes(example.__class__.objects.get(pk=example.pk).embedding)
    assert sync_example_questions() == 0

    example.text = "where is my order"
    example.save()
    assert ExampleQuestion.objects.get(pk=example.pk).embedding is None
    assert sync_example_questions() == 1
    assert bytes(ExampleQuestion.objects.get(pk=example.pk).embedding) != first


@pytest.mark.django_db
def test_one_question_is_one_example_however_it_is_cased_or_spaced(demo_kb):
    result = import_example_questions(
        [
            ("Where is my parcel?", "order-tracking"),
            ("  where IS my   parcel?", "order-tracking"),
            ("where is my parcel?", "damaged-or-missing-items"),
        ]
    )
    assert (result.created, result.unchanged, result.relabelled) == (1, 1, 1)
    example = ExampleQuestion.objects.get()
    assert example.article == demo_kb["damaged-or-missing-items"]  # the newer label wins
    assert example.source == ExampleQuestion.Source.IMPORTED


@pytest.mark.django_db
def test_import_kb_examples_skips_unknown_articles_and_long_questions_by_name(demo_kb, tmp_path):
    lines = [
        {"question": "how do i get my money back", "expected": "refunds"},
        {"question": "whats the weather tomorrow", "expected": "none"},
        {"question": "can i pay with bitcoin", "expected": "no-such-article"},
        {"question": "x" * 501, "expected": "refunds"},
    ]
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(line) for line in lines))
    out, err = StringIO(), StringIO()

    call_command("import_kb_examples", str(questions), stdout=out, stderr=err)

    assert "2 created" in out.getvalue() and "2 skipped; 2 embedded" in out.getvalue()
    assert "no article 'no-such-article'" in err.getvalue()
    assert "longer than 500 characters" in err.getvalue()
    assert ExampleQuestion.objects.filter(article=None).get().text == "whats the weather tomorrow"


@pytest.mark.django_db
def test_import_kb_examples_reports_a_malformed_file_by_line(demo_kb, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok", "expected": "refunds"}\n{not json\n')
    with pytest.raises(CommandError, match="bad.jsonl:2"):
        call_command("import_kb_examples", str(bad))
    assert not ExampleQuestion.objects.exists()


@pytest.mark.django_db
def test_the_freshness_check_is_still_one_query_and_sees_example_changes(demo_kb):
    ExampleQuestion.objects.create(text="how do i cancel my netflix subscription", article=None)
    with CaptureQueriesContext(connection) as queries:
        before = knowledge_base_signature()
    assert len(queries) == 1
    example = ExampleQuestion.objects.create(text="where's my stuff", article=None)
    added = knowledge_base_signature()
    example.text = "where is my stuff"
    example.save()
    edited = knowledge_base_signature()
    example.delete()
    deleted = knowledge_base_signature()
    assert before != added != edited != deleted


# --- The admin ---------------------------------------------------------------------------------


olivia_operator = personas.olivia_operator
alice_agent = personas.alice_agent


@pytest.mark.django_db
def test_it_lets_an_operator_add_an_unanswerable_example_in_the_admin(
    demo_kb, client, olivia_operator, django_capture_on_commit_callbacks
):
    client.force_login(olivia_operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(ADMIN + "add/", {"text": "  how do i cancel my  spotify  "})
    assert response.status_code == 302
    example = ExampleQuestion.objects.get()
    assert example.text == "how do i cancel my spotify" and example.is_unanswerable
    assert example.source == ExampleQuestion.Source.OPERATOR
    assert example.embedding  # embedded once the save committed, not on a customer's time
    listing = client.get(ADMIN).content.decode()
    assert "nothing: hand over" in listing


@pytest.mark.django_db
def test_the_admin_refuses_a_question_that_is_already_an_example(demo_kb, client, olivia_operator):
    add_example("Where is my parcel?", demo_kb["order-tracking"])
    client.force_login(olivia_operator)
    response = client.post(ADMIN + "add/", {"text": "where is my PARCEL?", "article": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["text"] == [
        "This question is already an example, answered by How do I track my order?: edit that one."
    ]
    assert ExampleQuestion.objects.count() == 1


@pytest.mark.django_db
def test_an_operator_adds_examples_on_the_articles_page(demo_kb, client, olivia_operator):
    article = demo_kb["contact-support"]
    client.force_login(olivia_operator)
    url = f"/admin/knowledge/article/{article.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: form.initial.get(name, "") for name in form.fields}
    data.update(
        {
            "published": "on",
            "example_questions-TOTAL_FORMS": "1",
            "example_questions-INITIAL_FORMS": "0",
            "example_questions-0-text": "<script>alert(1)</script> can a human help me",
            "passages-TOTAL_FORMS": "0",
            "passages-INITIAL_FORMS": "0",
        }
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    example = ExampleQuestion.objects.get()
    assert example.article == article
    page = client.get(url).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


@pytest.mark.django_db
def test_an_agent_cannot_see_or_add_example_questions(demo_kb, client, alice_agent):
    client.force_login(alice_agent)
    assert client.get(ADMIN).status_code == 403
    assert client.post(ADMIN + "add/", {"text": "hello"}).status_code == 403
    assert not ExampleQuestion.objects.exists()


@pytest.mark.django_db
def test_importing_many_examples_takes_a_few_statements_not_one_a_question(demo_kb):
    slugs = sorted(demo_kb)
    questions = [
        (f"a question worded {i} ways about {slugs[i % 7]}", slugs[i % 7]) for i in range(100)
    ]

    with CaptureQueriesContext(connection) as queries:
        result = import_example_questions(questions)

    assert (result.created, result.embedded) == (100, 100)
    assert not ExampleQuestion.objects.filter(embedding__isnull=True).exists()
    # The articles, the examples already there, one INSERT, the questions to embed, and one
    # UPDATE run per batch of 32 (with the transaction's own statements): not 200 and more.
    assert len(queries) <= 15, [query["sql"][:70] for query in queries]
