"""Operator forms without JSON (issue 17, point 8): phrase lists one a line, the earlier turns
of a test case as a short script, "must cite" chosen by article title, stop sequences one a
line, and the studio's plain notice while the offline answerer (which ignores the prompt)
answers. Through the real admin with Django's test client, as an Operator."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from knowledge.models import Article
from studio import services
from studio.models import PromptVersion
from studio.models import TestCase as Case
from studio.models import TestSet as CaseSet
from tests import personas
from tests.fixtures_fake_llm import answer_with_fake_model

pytestmark = pytest.mark.django_db

olivia_operator = personas.olivia_operator
alice_agent = personas.alice_agent

ADD_SET = "/admin/studio/testset/add/"
ADD_VERSION = "/admin/studio/promptversion/add/"
OFFLINE_TEXT = "Replies come from the offline answerer: prompt edits change nothing"


@pytest.fixture
def operator_client(olivia_operator) -> Client:
    client = Client()
    client.force_login(olivia_operator)
    return client


@pytest.fixture
def lantern() -> Article:
    return Article.objects.create(
        slug="lantern", title="Charging the Zephyr lantern", body="Use the USB-C cable."
    )


@pytest.fixture
def offline(settings):
    settings.LLM_PROVIDER = "auto"
    settings.OPENAI_API_KEY = ""


def set_form(**case: str) -> dict[str, str]:
    """The admin's add form of a test set with one case inline, as the browser posts it."""
    return {
        "name": "Lantern",
        "description": "",
        "cases-TOTAL_FORMS": "1",
        "cases-INITIAL_FORMS": "0",
        "cases-MIN_NUM_FORMS": "0",
        "cases-MAX_NUM_FORMS": "1000",
        "cases-0-message": "How do I charge my lantern?",
        "cases-0-prior_turns": "",
        "cases-0-must_cite": "",
        "cases-0-must_contain": "",
        "cases-0-must_not_contain": "",
        **{f"cases-0-{name}": value for name, value in case.items()},
    }


def version_form(**fields: str) -> dict[str, str]:
    return {
        "name": "Friendlier",
        "system_prompt": "You are kind.",
        "provider": "",
        "model": "",
        "temperature": "0.2",
        "top_p": "1",
        "max_tokens": "300",
        "stop": "",
        "history_tokens": "1000",
        "knowledge_tokens": "1000",
        **fields,
    }


# --- Phrase lists, earlier turns and the cited article --------------------------------------


def test_it_stores_phrases_typed_one_a_line_as_the_same_json_list(operator_client, lantern):
    response = operator_client.post(
        ADD_SET,
        set_form(
            must_contain="  USB-C  \r\n\r\n   \r\nthree hours\r\n",
            must_not_contain="refund\nsorry, I can't",
            prior_turns="Customer: Hi!\nBot: Hello, how can I help?\nAsk me anything.\n",
            must_cite=str(lantern.pk),
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    case = Case.objects.get()
    assert case.must_contain == ["USB-C", "three hours"]
    assert case.must_not_contain == ["refund", "sorry, I can't"]
    assert case.prior_turns == [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?\nAsk me anything."},
    ]
    assert case.must_cite == lantern


def test_it_shows_the_stored_lists_one_a_line_and_the_cited_article_by_title(
    operator_client, lantern
):
    test_set = CaseSet.objects.create(name="Lantern")
    Case.objects.create(
        test_set=test_set,
        message="How do I charge it?",
        must_contain=["USB-C", "three hours"],
        prior_turns=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
        must_cite=lantern,
    )
    page = operator_client.get(f"/admin/studio/testset/{test_set.pk}/change/").content.decode()
    assert "USB-C\nthree hours</textarea>" in page
    assert "Customer: Hi\nBot: Hey</textarea>" in page
    assert '["USB-C"' not in page  # no JSON left for the operator to edit
    # must_cite is an autocomplete select showing the article's title, not an id box.
    assert 'name="cases-0-must_cite"' in page and "admin-autocomplete" in page
    assert f'<option value="{lantern.pk}" selected>Charging the Zephyr lantern</option>' in page


def test_it_finds_the_article_to_cite_by_its_title(operator_client, lantern):
    Article.objects.create(slug="parcels", title="Where is my parcel?", body="Tracking.")
    response = operator_client.get(
        "/admin/autocomplete/",
        {
            "app_label": "studio",
            "model_name": "testcase",
            "field_name": "must_cite",
            "term": "zephyr",
        },
    )
    assert response.status_code == 200
    assert json.loads(response.content)["results"] == [
        {"id": str(lantern.pk), "text": "Charging the Zephyr lantern"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("must_contain", "fine\n" + "x" * 201, "Line 2 is too long: at most 200 characters"),
        ("must_not_contain", "\n".join(f"p{n}" for n in range(51)), "Too many lines: at most 50"),
        ("prior_turns", "Hello there\nBot: hi", "Line 1: start each turn with"),
        ("prior_turns", "Customer:   \nBot: hi", "Turn 1 is empty"),
        ("must_cite", "999999", "Select a valid choice"),
    ],
)
def test_it_refuses_a_bad_case_with_a_form_error_and_stores_nothing(
    operator_client, field, value, error
):
    response = operator_client.post(ADD_SET, set_form(**{field: value}))
    assert response.status_code == 200  # the form again, with its error
    assert error in response.content.decode()
    assert not CaseSet.objects.exists() and not Case.objects.exists()


def test_it_stores_stop_sequences_typed_one_a_line(operator_client, offline):
    response = operator_client.post(ADD_VERSION, version_form(stop="###\n\n END \n"))
    assert response.status_code == 302
    assert PromptVersion.objects.get().stop == ["###", "END"]


def test_it_refuses_more_than_four_stop_sequences_and_stores_nothing(operator_client, offline):
    response = operator_client.post(ADD_VERSION, version_form(stop="a\nb\nc\nd\ne"))
    assert response.status_code == 200
    assert "Too many lines: at most 4, one stop sequence a line" in response.content.decode()
    assert not PromptVersion.objects.exists()


# --- The offline answerer's notice ----------------------------------------------------------


def test_it_tells_the_operator_prompt_edits_do_nothing_while_the_offline_answerer_answers(
    operator_client, offline
):
    draft = services.create_draft(by=None, name="Draft", system_prompt="Be brief.")
    for url in (
        ADD_VERSION,
        f"/admin/studio/promptversion/{draft.pk}/change/",
        "/studio/playground/",
        "/studio/evaluations/",
    ):
        page = operator_client.get(url).content.decode()
        assert OFFLINE_TEXT in page, url
        assert "set OPENAI_API_KEY" in page, url


def test_it_shows_no_offline_notice_with_a_model_configured(operator_client, settings, fake_llm):
    answer_with_fake_model(settings, fake_llm)
    draft = services.create_draft(by=None, name="Draft", system_prompt="Be brief.")
    for url in (
        ADD_VERSION,
        f"/admin/studio/promptversion/{draft.pk}/change/",
        "/studio/playground/",
        "/studio/evaluations/",
    ):
        page = operator_client.get(url).content.decode()
        assert "offline answerer:" not in page, url


def test_it_warns_about_a_version_that_names_the_offline_answerer_even_with_a_model(
    operator_client, settings, fake_llm
):
    answer_with_fake_model(settings, fake_llm)
    offline_version = services.create_draft(by=None, name="Offline", system_prompt="x")
    PromptVersion.objects.filter(pk=offline_version.pk).update(provider="offline")
    page = operator_client.get(f"/admin/studio/promptversion/{offline_version.pk}/change/")
    assert OFFLINE_TEXT in page.content.decode()
    assert "this version names the offline answerer" in page.content.decode()
    # On the playground the notice follows the chosen version: its option carries the text.
    playground = operator_client.get("/studio/playground/").content.decode()
    assert f'value="{offline_version.pk}" data-offline-notice="Replies come from' in playground
