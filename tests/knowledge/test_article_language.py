"""Languages in the knowledge base: detect_language names the language of a text (or is unsure),
ingest_kb and the admin store an article's language when nobody says it, an operator's or a
file's word wins, and retrieval's passages carry it."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command

from knowledge import language as language_module
from knowledge.language import detect_language, language_name
from knowledge.models import Article
from knowledge.search import search
from tests.fixtures_kb import indexed_article

ADMIN = "/admin/knowledge/article/"
NO_INLINE_ROWS = {
    f"{prefix}-{field}": "0"
    for prefix in ("example_questions", "passages")
    for field in ("TOTAL_FORMS", "INITIAL_FORMS")
}

GERMAN_ARTICLE = """\
# Bestellung stornieren

Sie können Ihre Bestellung stornieren, solange sie noch nicht versandt wurde. Öffnen Sie dazu
in Ihrem Konto die Bestellübersicht und wählen Sie bei der Bestellung „Stornieren“. Den Betrag
erstatten wir innerhalb von fünf Werktagen auf das Zahlungsmittel, mit dem Sie bezahlt haben.
"""
FRENCH_ARTICLE = """\
# Annuler une commande

Vous pouvez annuler votre commande tant qu'elle n'a pas été expédiée. Ouvrez la liste de vos
commandes dans votre compte et choisissez « Annuler ». Nous vous remboursons sous cinq jours
ouvrés sur le moyen de paiement que vous avez utilisé.
"""
SPANISH_ARTICLE = """\
# Cancelar un pedido

Puede cancelar su pedido mientras no se haya enviado. Abra la lista de pedidos en su cuenta y
elija «Cancelar». Le devolvemos el importe en un plazo de cinco días hábiles en el mismo medio
de pago que utilizó.
"""
ENGLISH_ARTICLE = """\
# Cancel an order

You can cancel your order as long as it has not shipped yet. Open the order list in your
account and choose "Cancel". We refund the amount within five working days to the payment
method you used.
"""


def ingest(*paths: Path, **options: Any) -> str:
    out = io.StringIO()
    call_command("ingest_kb", *[str(p) for p in paths], stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def lexical_only(settings: Any) -> None:
    settings.KB_EMBEDDINGS = "off"


@pytest.fixture
def staff_client(client: Any, db: None) -> Any:
    staff = User.objects.create_user(
        "operator", password="pw-operator-123", is_staff=True, is_superuser=True
    )
    client.force_login(staff)
    return client


# --- Naming a text's language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Where is my order?", "en"),
        ("How do I reset my password?", "en"),
        ("Wo ist meine Bestellung?", "de"),
        ("Kann ich mit PayPal bezahlen?", "de"),
        ("Où est ma commande ?", "fr"),
        ("Je veux résilier mon abonnement", "fr"),
        ("¿Dónde está mi pedido?", "es"),
        ("Nunca recibí el reembolso", "es"),
        ("Dov'è il mio ordine?", "it"),
        ("Posso restituire queste scarpe?", "it"),
        ("Waar is mijn bestelling?", "nl"),
        ("Onde está a minha encomenda?", "pt"),
    ],
)
def test_it_names_the_language_of_a_short_customer_question(text, code):
    assert detect_language(text) == code


@pytest.mark.parametrize(
    "text", ["hi", "ok", "thanks", "danke", "merci", "order 4411", "iPhone 15", "?", "", "   "]
)
def test_it_is_unsure_of_a_message_too_short_to_tell(text):
    assert detect_language(text) is None


@pytest.mark.parametrize(
    "text", ["Siparişim nerede? Aboneliğimi iptal etmek istiyorum", "Kde je moje objednávka?"]
)
def test_it_is_unsure_of_a_language_it_does_not_name_rather_than_guess_one_it_does(text):
    assert detect_language(text) is None


def test_it_reads_an_articles_prose_past_its_code_and_links():
    article = (
        "Öffnen Sie die Einstellungen und tippen Sie auf „Konto löschen“. Die Daten werden "
        "danach innerhalb von 30 Tagen entfernt.\n\n"
        "```sh\ncurl -X DELETE https://api.example.com/v1/account --header 'Authorization: "
        'Bearer token\' --data \'{"confirm": true, "reason": "the customer asked"}\'\n```\n'
        "Mehr dazu in [the account settings guide](https://help.example.com/account/settings)."
    )
    assert detect_language(article) == "de"


def test_it_names_languages_in_english_for_the_prompt():
    assert [language_name(code) for code in ("de", "de-CH", "pt_BR", "EN", "tr", "", None)] == [
        "German",
        "German",
        "Portuguese",
        "English",
        None,
        None,
        None,
    ]


def test_it_loads_its_model_once_for_threads_asking_at_the_same_moment(monkeypatch):
    from py3langid.langid import LanguageIdentifier

    monkeypatch.setattr(language_module, "_identifier", None)
    load = LanguageIdentifier.from_model_file
    loads: list[str] = []

    def slow_load(model_file: str, **options: Any) -> Any:
        loads.append(model_file)
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        return load(model_file, **options)

    monkeypatch.setattr(LanguageIdentifier, "from_model_file", slow_load)
    results: list[str | None] = []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        results.append(detect_language("Wo ist meine Bestellung?"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == ["de"] * 4
    assert len(loads) == 1


# --- ingest_kb -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ingesting_articles_without_front_matter_stores_the_language_they_are_written_in(
    tmp_path, lexical_only
):
    write(tmp_path / "bestellung-stornieren.md", GERMAN_ARTICLE)
    write(tmp_path / "annuler-commande.md", FRENCH_ARTICLE)
    write(tmp_path / "cancelar-pedido.md", SPANISH_ARTICLE)
    write(tmp_path / "cancel-order.md", ENGLISH_ARTICLE)
    write(tmp_path / "short.md", "# FAQ\n\n1234\n")

    ingest(tmp_path)

    languages = dict(Article.objects.values_list("slug", "language"))
    assert languages == {
        "bestellung-stornieren": "de",
        "annuler-commande": "fr",
        "cancelar-pedido": "es",
        "cancel-order": "en",
        "short": "en",  # too short to tell: the default
    }


@pytest.mark.django_db
def test_front_matter_html_lang_and_the_language_option_win_over_detection(tmp_path, lexical_only):
    write(tmp_path / "said.md", "---\nlanguage: de-CH\n---\n" + FRENCH_ARTICLE)
    write(
        tmp_path / "page.html",
        '<html lang="it"><head><title>Annuler</title></head><body><p>'
        + FRENCH_ARTICLE.split("\n\n", 1)[1]
        + "</p></body></html>",
    )
    ingest(tmp_path)
    write(tmp_path / "other" / "option.md", GERMAN_ARTICLE)
    ingest(tmp_path / "other", language="nl")

    languages = dict(Article.objects.values_list("slug", "language"))
    assert languages == {"said": "de-CH", "page": "it", "option": "nl"}


@pytest.mark.django_db
def test_re_ingesting_keeps_the_language_an_article_already_has(tmp_path, lexical_only):
    german = write(tmp_path / "bestellung.md", GERMAN_ARTICLE)
    ingest(tmp_path)
    Article.objects.filter(slug="bestellung").update(language="de-AT")  # an operator's choice
    german.write_text(GERMAN_ARTICLE + "\nNach dem Versand geht das nicht mehr.\n")

    ingest(tmp_path)

    assert Article.objects.get().language == "de-AT"


# --- The admin -----------------------------------------------------------------------------------


def add_article(client: Any, title: str, body: str, language: str) -> Any:
    return client.post(
        ADMIN + "add/",
        {
            "title": title,
            "slug": title.lower().replace(" ", "-"),
            "body": body,
            "language": language,
            "published": "on",
            **NO_INLINE_ROWS,
        },
        follow=True,
    )


def test_the_admin_offers_to_detect_a_new_articles_language(staff_client):
    page = staff_client.get(ADMIN + "add/").content.decode()
    assert 'name="language"' in page
    assert 'placeholder="Detect automatically"' in page
    form = staff_client.get(ADMIN + "add/").context["adminform"].form
    assert form.initial["language"] == ""


def test_the_admin_detects_the_language_of_an_article_saved_without_one(staff_client, lexical_only):
    response = add_article(
        staff_client, "Bestellung stornieren", GERMAN_ARTICLE.split("\n", 2)[2], ""
    )

    assert response.status_code == 200
    assert Article.objects.get().language == "de"
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Language detected from the text: German (de)." in messages


def test_the_admin_keeps_the_language_an_operator_chose(staff_client, lexical_only):
    add_article(staff_client, "Bestellung stornieren", GERMAN_ARTICLE.split("\n", 2)[2], "en")
    assert Article.objects.get().language == "en"


def test_the_admin_says_so_when_the_text_does_not_tell(staff_client, lexical_only):
    response = add_article(staff_client, "FAQ", "1234", "")
    assert Article.objects.get().language == "en"
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("didn't tell its language clearly: English (en) kept" in m for m in messages)


def test_clearing_the_language_in_the_admin_detects_it_again(staff_client, lexical_only):
    article = Article.objects.create(
        slug="annuler", title="Annuler une commande", body=FRENCH_ARTICLE, language="en"
    )
    page = staff_client.get(f"{ADMIN}{article.pk}/change/")
    data = {**page.context["adminform"].form.initial, **NO_INLINE_ROWS}
    data = {k: v for k, v in data.items() if v is not None and k != "published"}
    data.update(language="", published="on")

    staff_client.post(f"{ADMIN}{article.pk}/change/", data)

    assert Article.objects.get().language == "fr"


def test_the_admin_action_detects_the_language_of_selected_articles(staff_client, lexical_only):
    spanish = Article.objects.create(slug="es", title="Cancelar", body=SPANISH_ARTICLE)
    short = Article.objects.create(slug="short", title="FAQ", body="1234", language="de")
    before = Article.objects.get(pk=spanish.pk).updated_at

    response = staff_client.post(
        ADMIN,
        {"action": "detect_language", "_selected_action": [spanish.pk, short.pk]},
        follow=True,
    )

    spanish.refresh_from_db()
    assert spanish.language == "es" and spanish.updated_at > before  # retrieval notices it
    assert Article.objects.get(pk=short.pk).language == "de"  # unsure: kept
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(m.startswith("1 article got a new language.") for m in messages)


# --- Retrieval --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_search_results_carry_their_articles_language(lexical_only):
    indexed_article(
        slug="stornieren", title="Bestellung stornieren", body=GERMAN_ARTICLE, language="de"
    )
    indexed_article(slug="cancel", title="Cancel an order", body=ENGLISH_ARTICLE)

    hits = {hit.title: hit.language for hit in search("Bestellung stornieren cancel order", 5)}

    assert hits == {"Bestellung stornieren": "de", "Cancel an order": "en"}
