"""The learned ranker over retrieval's candidates, and the signals it reads."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from knowledge.evaluation import read_questions
from knowledge.indexing import sync_example_questions, sync_passages
from knowledge.language import looks_english
from knowledge.models import Article, ExampleQuestion, Passage
from knowledge.search import (
    Hit,
    embeddings,
    knowledge_index,
    min_confidence,
    ranking,
    search,
    warm_question,
)
from knowledge.search.text import MAX_SENTENCES_PER_PASSAGE, passage_sentences
from knowledge.services import DEMO_DIR
from tests import fixtures_kb

HOLDOUT = DEMO_DIR / "holdout.jsonl"


demo_kb = fixtures_kb.demo_kb


@pytest.fixture
def ranker_off(settings):
    settings.KB_RANKER_PATH = "off"


def slug_of(hit: Hit) -> str:
    return Article.objects.get(id=hit.article_id).slug


# --- Language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "english"),
    [
        ("are you hiring? how do I apply for a job", True),
        ("where is my parcel", True),
        ("zigbee hub max devices", True),  # keywords: the knowledge base's language
        ("can i pay for my café order with a card", True),
        ("Kann ich meine Bestellung noch stornieren?", False),
        ("Où est mon colis ? Comment je peux suivre ma livraison ?", False),
        ("¿Cuánto cuesta el envío a Estados Unidos?", False),
        ("Hoe kan ik mijn wachtwoord wijzigen?", False),
        ("Come posso restituire un prodotto?", False),
    ],
)
def test_it_tells_english_questions_from_other_languages(question, english):
    assert looks_english(question) is english


@pytest.mark.django_db
def test_an_english_question_about_what_no_article_mentions_is_not_answered(demo_kb, ranker_off):
    # Its unknown words (hiring, job) are a topic the knowledge base lacks, not a language gap:
    # they must not hand the judgement to the embedding, which finds the contact page "close".
    hits = search("are you hiring? how do i apply for a job", 3)
    assert not hits or hits[0].confidence < min_confidence(), hits[0]


@pytest.mark.django_db
def test_a_question_in_another_language_still_finds_its_article(demo_kb, ranker_off):
    hits = search("Wie lange dauert es, bis ich mein Geld zurückbekomme?", 3)
    assert slug_of(hits[0]) == "refunds"
    assert hits[0].confidence >= min_confidence()


# --- Words no article uses ----------------------------------------------------------------


OTHER_COMPANY = "how do i cancel my netflix subscription"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("question", "without"),
    [
        (OTHER_COMPANY, "how do i cancel my subscription"),
        ("how do i cancle my subscripton", None),  # typos of indexed words are not unknown
        ("where is order 48213", None),  # numbers are details, not topics
        ("netflix", None),  # nothing would be left to compare
        ("Kann ich meine Bestellung stornieren?", None),  # another language, not a topic gap
    ],
)
def test_it_takes_the_words_no_article_uses_out_of_the_question(demo_kb, question, without):
    index = knowledge_index.get()
    assert index.questions_to_embed(question) == [question] + ([without] if without else [])


@pytest.mark.django_db
def test_a_word_no_article_uses_that_pulls_the_question_away_lowers_its_confidence(demo_kb):
    """The one word no article uses ("netflix") pulls the question away from the articles'
    subscription: the shipped ranker is much less sure than it would be if that word were
    known (0.57 against 0.71 with no examples), and our own subscription stays answered."""
    index = knowledge_index.get()
    assert index.ranker is not None
    candidates = index.candidates_for(OTHER_COMPANY)
    assert candidates is not None
    column = ranking.FEATURES.index("unknown_words_pull")
    assert (candidates.rows[:3, column] < -0.1).all()
    as_if_known = candidates.rows.copy()
    as_if_known[:, column] = 0.0

    confidence = index.ranker.score(candidates.rows, with_examples=False)[1].max()
    confidence_if_known = index.ranker.score(as_if_known, with_examples=False)[1].max()

    assert confidence < confidence_if_known - 0.1
    own = search("how do i cancel my brightwave plus subscription", 1)[0]
    assert slug_of(own) == "brightwave-plus" and own.confidence >= min_confidence()


@pytest.mark.django_db
def test_warming_a_question_embeds_all_that_search_will_need(demo_kb, monkeypatch):
    """A reply warms its question with the database connection released; search must then find
    every vector it needs in the cache, the question without its unknown words included."""
    index = knowledge_index.get()
    embedded: list[str] = []
    original = type(index.embedder).embed_queries

    def counting(self, texts):
        embedded.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(type(index.embedder), "embed_queries", counting)
    embeddings.forget_queries()

    warm_question(f"  {OTHER_COMPANY} ")
    assert embedded == [OTHER_COMPANY, "how do i cancel my subscription"]
    search(OTHER_COMPANY, 3)
    assert len(embedded) == 2


@pytest.mark.django_db
def test_with_example_questions_a_question_is_embedded_once(demo_kb):
    """Examples teach look-alikes better than the words no article uses can: with any, the
    second embedding is spared (and the signal is 0, as the ranker was trained)."""
    ExampleQuestion.objects.create(text="how do i cancel my spotify subscription")
    sync_example_questions()
    index = knowledge_index.get()

    assert index.questions_to_embed(OTHER_COMPANY) == [OTHER_COMPANY]
    candidates = index.candidates_for(OTHER_COMPANY)
    assert candidates is not None
    assert not candidates.rows[:, ranking.FEATURES.index("unknown_words_pull")].any()


# --- Sentences and their vectors --------------------------------------------------------------


def test_it_cuts_a_passage_into_plain_sentences_for_embedding():
    text = (
        "## Returning an item\n\nOpen **Orders** and pick the item. Then print the "
        "[return label](https://x.example/label).\n\n- Pack it well, in the box.\n- Drop it "
        "off.\n\nOK!"
    )
    assert passage_sentences(text) == [
        "Returning an item",
        "Open Orders and pick the item.",
        "Then print the return label.",
        "Pack it well, in the box.",
        "Drop it off.",
    ]
    many = " ".join(f"Sentence number {i} is here." for i in range(40))
    assert len(passage_sentences(many)) == MAX_SENTENCES_PER_PASSAGE


@pytest.mark.django_db
def test_it_stores_the_title_vector_and_one_vector_per_sentence_with_each_passage(demo_kb):
    sync_passages()
    embedder = embeddings.get_embedder()
    assert embedder is not None
    for passage in Passage.objects.select_related("article"):
        title = embeddings.from_bytes(passage.title_embedding, embedder.dim)
        assert title is not None
        expected_title = embedder.embed_passages_cached([passage.article.title])[0]
        assert np.allclose(title, expected_title, atol=1e-6)
        sentences = embeddings.matrix_from_bytes(passage.sentence_embeddings, embedder.dim)
        assert sentences is not None
        assert len(sentences) == len(passage_sentences(passage.text))


@pytest.mark.django_db
def test_it_embeds_passages_stored_before_sentence_vectors_existed_once(demo_kb):
    sync_passages()
    Passage.objects.filter(article=demo_kb["returns"]).update(sentence_embeddings=None)
    assert sync_passages().reindexed == 1
    assert not Passage.objects.filter(sentence_embeddings__isnull=True).exists()
    assert sync_passages().reindexed == 0


# --- The model -------------------------------------------------------------------------------


def test_the_logistic_fit_learns_which_column_decides():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3))
    y = (x[:, 1] > 0.2).astype(float)
    mean, scale, weights, bias = ranking.fit_logistic(x, y, l2=0.1)
    assert abs(weights[1]) > 5 * max(abs(weights[0]), abs(weights[2]))
    predicted = ((x - mean) / scale) @ weights + bias > 0
    assert (predicted == y.astype(bool)).mean() > 0.97


def test_boosted_trees_learn_a_signal_that_counts_only_when_another_is_absent():
    """Like "a good passage counts only when no unanswerable example is near": one weighted
    sum can't say it, shallow trees can."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 4))
    y = ((x[:, 0] > 0.0) & (x[:, 2] < 0.5)).astype(float)
    trees = ranking.fit_boosted_trees(x, y)
    mean, scale, weights, bias = ranking.fit_logistic(x, y, l2=0.1)
    logistic_right = ((((x - mean) / scale) @ weights + bias > 0) == y.astype(bool)).mean()

    trees_right = ((trees.probability(x) > 0.5) == y.astype(bool)).mean()

    assert trees_right > 0.97 > logistic_right + 0.05
    # One row at a time (as a search scores it) walks the same trees.
    assert np.allclose(trees.logit(x[:3]), trees.logit(x[:20])[:3])


def synthetic_questions(
    n: int, *, with_examples: bool = True, evidence_needed: float = 0.8, seed: int = 7
) -> list[ranking.TrainingQuestion]:
    """Questions whose right article has the highest hybrid_confidence (feature 0), answerable
    when that is above evidence_needed (give or take some noise)."""
    rng = np.random.default_rng(seed)
    questions = []
    for i in range(n):
        rows = rng.normal(size=(3, len(ranking.FEATURES)))
        best = int(np.argmax(rows[:, 0]))
        answerable = rows[best, 0] + rng.normal(scale=0.3) > evidence_needed
        questions.append(
            ranking.TrainingQuestion(
                rows, best if answerable else None, f"q{i}", with_examples=with_examples
            )
        )
    return questions


def test_a_ranker_with_boosted_trees_scores_the_same_after_saving_and_loading(tmp_path):
    ranker, _ = ranking.train(synthetic_questions(400), embedding_model="model")
    assert ranker.trained["answerability_model"] == "BoostedTrees"
    ranker.save(tmp_path / "ranker.json")

    loaded = ranking.Ranker.load(tmp_path / "ranker.json")

    rows = np.random.default_rng(1).normal(size=(3, len(ranking.FEATURES)))
    assert np.allclose(loaded.score(rows)[1], ranker.score(rows)[1])
    assert loaded == ranker


def test_with_few_questions_answerability_is_a_logistic_regression():
    ranker, _ = ranking.train(synthetic_questions(60), embedding_model="model")
    assert ranker.trained["answerability_model"] == "LogisticModel"


def test_it_sets_its_threshold_apart_for_knowledge_bases_without_example_questions():
    """The same evidence means less when no example question vouches for it: here questions
    learnt without examples need more of it to be answerable."""
    questions = synthetic_questions(300) + synthetic_questions(
        300, with_examples=False, evidence_needed=1.3, seed=8
    )

    ranker, figures = ranking.train(questions, embedding_model="model")

    assert set(figures) == {"with examples", "without examples"}
    assert ranker.without_examples_shift < -0.3
    rows = np.zeros((1, len(ranking.FEATURES)))
    rows[0, 0] = 1.0
    assert ranker.score(rows, with_examples=False)[1][0] < ranker.score(rows)[1][0]


def test_cross_validation_keeps_a_question_learnt_in_several_ways_in_one_fold():
    rows = np.zeros((2, len(ranking.FEATURES)))
    regimes = [ranking.TrainingQuestion(rows, 0, "where is my parcel") for _ in range(3)]
    assert len({ranking._fold(q, position) for position, q in enumerate(regimes)}) == 1
    ungrouped = [ranking.TrainingQuestion(rows, 0) for _ in range(ranking.FOLDS)]
    assert len({ranking._fold(q, position) for position, q in enumerate(ungrouped)}) == 5


def test_a_hits_confidence_is_its_answerability_discounted_by_its_order():
    n = len(ranking.FEATURES)
    m = len(ranking.ANSWERABILITY_FEATURES)
    # Order by the first feature; answerable when hybrid_confidence (also the first) is high.
    order = ranking.LogisticModel((0.0,) * n, (1.0,) * n, (4.0,) + (0.0,) * (n - 1), 0.0)
    answerable = ranking.LogisticModel((0.0,) * m, (1.0,) * m, (8.0,) + (0.0,) * (m - 1), -4.0)
    ranker = ranking.Ranker(
        ranking.FEATURES, order, ranking.ANSWERABILITY_FEATURES, answerable, "model"
    )
    rows = np.zeros((2, n))
    rows[:, 0] = [0.9, 0.2]
    probability, confidence = ranker.score(rows)
    assert probability[0] > probability[1]
    assert confidence[0] == pytest.approx(1 / (1 + np.exp(-(8 * 0.9 - 4))))
    assert confidence[1] == pytest.approx(confidence[0] * probability[1] / probability[0])
    rows[:, 0] = [0.3, 0.2]  # the best of a bad lot: not answerable
    assert ranker.score(rows)[1][0] < 0.5


# --- Training and use ----------------------------------------------------------------------


def write_questions(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text(
        "".join(json.dumps({"question": q, "expected": e}) + "\n" for q, e in rows),
        encoding="utf-8",
    )
    return path


TRAINING = [
    ("where is my parcel", "order-tracking"),
    ("how do i reset my password", "password-reset"),
    ("can i get my money back", "refunds"),
    ("how long does delivery take", "shipping"),
    ("my plug won't connect to the wifi", "wifi-troubleshooting"),
    ("how do i turn on two-factor authentication", "two-factor-authentication"),
    ("what's the capital of France", "none"),
    ("write me a poem about cats", "none"),
    ("who won the football yesterday", "none"),
]


@pytest.mark.django_db
def test_it_trains_a_ranker_that_search_uses_from_the_next_question(demo_kb, tmp_path, settings):
    questions = write_questions(tmp_path / "mine.jsonl", TRAINING)
    out = tmp_path / "ranker.json"
    stdout = StringIO()
    call_command("train_kb_ranker", str(questions), "--out", str(out), stdout=stdout)
    assert "Trained on 9 of 9 questions" in stdout.getvalue()

    settings.KB_RANKER_PATH = str(out)
    index = knowledge_index.get()
    assert index.ranker is not None and index.ranker.trained["on"] == ["mine.jsonl"]
    hits = search("where is my parcel", 3)
    candidates = index.candidates_for("where is my parcel")
    assert candidates is not None
    _, confidence = index.ranker.score(candidates.rows)
    assert hits[0].confidence == pytest.approx(float(confidence.max()), abs=1e-4)

    settings.KB_RANKER_PATH = "off"
    assert knowledge_index.get().ranker is None


@pytest.mark.django_db
def test_a_ranker_trained_with_another_embedding_model_is_not_used(demo_kb, tmp_path, settings):
    data = json.loads(ranking.DEFAULT_RANKER_PATH.read_text())
    data["embedding_model"] = "some-other-model"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    settings.KB_RANKER_PATH = str(other)
    index = knowledge_index.get()
    assert index.is_hybrid and index.ranker is None
    assert slug_of(search("where is my parcel", 3)[0]) == "order-tracking"


@pytest.mark.django_db
def test_an_unreadable_ranker_file_falls_back_to_the_hybrid_score(demo_kb, tmp_path, settings):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    settings.KB_RANKER_PATH = str(broken)
    assert knowledge_index.get().ranker is None
    assert slug_of(search("where is my parcel", 3)[0]) == "order-tracking"
    settings.KB_RANKER_PATH = str(tmp_path / "missing.json")
    assert knowledge_index.get().ranker is None


@pytest.mark.django_db
def test_training_refuses_a_question_set_naming_an_unknown_article(demo_kb, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl", [("where is my parcel", "no-such")])
    with pytest.raises(CommandError, match="no-such"):
        call_command("train_kb_ranker", str(questions), "--out", str(tmp_path / "r.json"))


@pytest.mark.django_db
def test_training_refuses_questions_that_are_all_answerable(demo_kb, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl", TRAINING[:6])
    with pytest.raises(CommandError, match="unanswerable"):
        call_command("train_kb_ranker", str(questions), "--out", str(tmp_path / "r.json"))


@pytest.mark.django_db
def test_the_shipped_ranker_beats_the_hybrid_score_on_the_held_out_questions(demo_kb, settings):
    """knowledge/search/ranker.json was trained without holdout.jsonl: it must find more right
    articles first and separate unanswerable questions better than the hybrid score."""
    questions = read_questions(HOLDOUT)

    def figures() -> tuple[float, float]:
        hits, answerable = 0, 0
        answered_conf, unanswerable_conf = [], []
        for question in questions:
            found = search(question.question, 1)
            confidence = found[0].confidence if found else 0.0
            if question.expected == "none":
                unanswerable_conf.append(confidence)
            else:
                answerable += 1
                hits += bool(found) and slug_of(found[0]) == question.expected
                answered_conf.append(confidence)
        a, u = np.array(answered_conf), np.array(unanswerable_conf)
        auc = float((a[:, None] > u[None, :]).mean())  # how well confidence separates them
        return hits / answerable, auc

    settings.KB_RANKER_PATH = "off"
    hybrid_hit, hybrid_auc = figures()
    settings.KB_RANKER_PATH = None
    assert knowledge_index.get().ranker is not None
    ranked_hit, ranked_auc = figures()
    assert ranked_hit > hybrid_hit
    assert ranked_auc > hybrid_auc


@pytest.mark.django_db
def test_eval_kb_says_what_ranked_the_answers(demo_kb, tmp_path, settings):
    questions = write_questions(tmp_path / "q.jsonl", TRAINING)
    out = StringIO()
    call_command("eval_kb", str(questions), stdout=out)
    assert "Retrieval: learned ranker" in out.getvalue()
    assert "trained on dev.jsonl, eval.jsonl" in out.getvalue()
    settings.KB_RANKER_PATH = "off"
    out = StringIO()
    call_command("eval_kb", str(questions), stdout=out)
    assert "Retrieval: hybrid score (no ranker)" in out.getvalue()
