"""The bot as eval_kb's answerer: each question answered as a one-message conversation,
grounded and abstaining exactly as a reply would be (knowledge/evaluation.py measures it); and
the bot measured on other companies' knowledge bases, leave-one-company-out (bench/companies/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.test.utils import override_settings

from bot import config, run
from bot.prompt import build_request
from bot.providers import registry
from bot.providers.base import Provider
from bot.types import ChatMessage
from knowledge import search as knowledge_search
from knowledge.benchmark import KnowledgeBaseFolder, loaded_alone
from knowledge.evaluation import Answerer, AnswerOutcome, Report, evaluate
from knowledge.models import Article
from knowledge.search import ranking
from knowledge.search.embeddings import get_embedder
from knowledge.search.ranking import TrainingQuestion
from knowledge.training import training_questions

ANSWERERS = ("offline", "model")


class AnswererUnavailable(ValueError):
    """The answerer asked for can't run with this configuration; the message says why."""


def answer_question(question: str, provider: Provider | None = None) -> run.Answer:
    """The bot's answer to a conversation of one message with the active configuration, not
    streamed and not stored. `provider`: the provider to ask instead of the configuration's.
    Not retried: a ProviderError is raised as it comes."""
    bot = config.active()
    answered_by = provider or registry.for_config(bot)
    request = build_request(bot, [ChatMessage("user", question)], provider=answered_by)
    return run.answer(request, answered_by)


def bot_answerer(kind: str = "offline") -> Answerer:
    """ "offline": the offline answerer whatever is configured; "model": the configured provider
    (the active prompt version's, else LLM_PROVIDER)."""
    if kind == "offline":
        provider = registry.get_named_provider("offline")
    elif kind == "model":
        provider = registry.for_config(config.active())
        if provider.name == "offline":
            raise AnswererUnavailable(
                "--answerer model needs a model, but the offline answerer is configured: set "
                "LLM_PROVIDER=openai and OPENAI_* (or activate a prompt version that names one)."
            )
    else:
        raise AnswererUnavailable(f"unknown answerer {kind!r}: one of {', '.join(ANSWERERS)}")

    def answer(question: str) -> AnswerOutcome:
        result = answer_question(question, provider)
        return AnswerOutcome(
            abstained=result.abstained,
            source_article_ids=tuple(s.article_id for s in result.sources if s.article_id),
            out_of_domain=result.abstained_by == "out_of_domain",
            text=result.text,
        )

    return answer


# --- Other companies' knowledge bases (bench/companies/) -----------------------------------

# The figures the targets are set on, for one company.
CROSS_LINGUAL = ("cross_lingual",)
UPSET_OR_LONG = ("angry", "verbose")
# Not about the company at all: declined as out of its domain, not as "couldn't find it".
NOT_ABOUT_THE_COMPANY = ("out_of_scope", "prompt_injection")


def company_figures(report: Report) -> dict[str, float | None]:
    return {
        "hit@1": report.hit_at(1),
        "hit@3": report.hit_at(3),
        "mrr": report.mrr,
        "cross_lingual_hit@1": report.of_kinds(*CROSS_LINGUAL).hit_at(1),
        "angry_verbose_hit@1": report.of_kinds(*UPSET_OR_LONG).hit_at(1),
        "out_of_scope_refused": report.abstention_recall,
        "in_scope_wrongly_refused": report.wrongly_refused,
        "answered_correctly": report.answered_correctly,
        "other_domain_declined": report.of_kinds(*NOT_ABOUT_THE_COMPANY).declined_out_of_domain(),
        "in_scope_declined_as_other_domain": report.answerable().declined_out_of_domain(),
    }


def training_rows(folder: KnowledgeBaseFolder) -> list[TrainingQuestion]:
    """A knowledge base's questions as the ranker learns them, with all its example questions
    (every example regime, as train_kb_ranker)."""
    with loaded_alone(folder, examples=None):
        index = knowledge_search.knowledge_index.get()
        if not index.has_ranking_vectors:
            raise AnswererUnavailable("the ranker needs sentence embeddings (KB_EMBEDDINGS)")
        slug_of = dict(Article.objects.values_list("id", "slug"))
        rows, _skipped = training_questions(index, folder.questions(), slug_of)
    return rows


@contextmanager
def ranker_trained_on(rows: list[TrainingQuestion], into: Path) -> Iterator[None]:
    """Within the block, search ranks with a ranker fitted on these rows (written to `into`)."""
    embedder = get_embedder()
    if embedder is None:
        raise AnswererUnavailable("the ranker needs sentence embeddings (KB_EMBEDDINGS)")
    ranker, _figures = ranking.train(rows, embedding_model=embedder.model_id)
    ranker.save(into)
    with override_settings(KB_RANKER_PATH=str(into)):
        yield


def measure(folder: KnowledgeBaseFolder, *, examples: int = 0, answerer: str = "offline") -> Report:
    """The bot on this knowledge base alone, taught its first `examples` example questions."""
    with loaded_alone(folder, examples=examples):
        return evaluate(folder.questions(), bot_answerer(answerer))


@dataclass(frozen=True)
class Teaching:
    """A company taught its first `examples` example questions, against the same questions
    untaught: figures on the questions whose article got an example (covered) and on the
    others (not covered; the unanswerable ones among them), before and after."""

    examples: int
    covered_before: dict[str, float | None]
    covered_after: dict[str, float | None]
    not_covered_before: dict[str, float | None]
    not_covered_after: dict[str, float | None]


def teaching_figures(report: Report) -> dict[str, float | None]:
    return {
        "hit@1": report.hit_at(1),
        "hit@3": report.hit_at(3),
        "answered_correctly": report.answered_correctly,
        "in_scope_wrongly_refused": report.wrongly_refused,
        "out_of_scope_refused": report.abstention_recall,
    }


def teaching_curve(
    folder: KnowledgeBaseFolder, counts: Sequence[int], *, answerer: str = "offline"
) -> list[Teaching]:
    """The company taught each count of its example questions (the first ones: an operator
    adds the most common first), against it untaught, split by what the examples cover."""
    untaught = measure(folder, examples=0, answerer=answerer)
    curve: list[Teaching] = []
    for n in counts:
        taught = measure(folder, examples=n, answerer=answerer)
        labels = {q.expected for q in folder.examples(n)}

        curve.append(
            Teaching(
                n,
                _covered(untaught, labels, True),
                _covered(taught, labels, True),
                _covered(untaught, labels, False),
                _covered(taught, labels, False),
            )
        )
    return curve


def _covered(report: Report, labels: set[str], covered: bool) -> dict[str, float | None]:
    """The figures on the questions whose expected article is (or is not) among `labels`."""
    return teaching_figures(
        Report([o for o in report.outcomes if (o.question.expected in labels) == covered])
    )


def leave_one_company_out(
    companies: list[KnowledgeBaseFolder],
    *,
    also_train_on: Sequence[KnowledgeBaseFolder] = (),
    examples: int = 0,
    answerer: str = "offline",
    workdir: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Report]:
    """Each company measured with a ranker trained on every other company (and
    `also_train_on`), never on its own questions or examples."""
    rows: dict[str, list[TrainingQuestion]] = {}
    for folder in [*companies, *also_train_on]:
        if progress is not None:
            progress(f"learning from {folder.name}")
        rows[folder.name] = training_rows(folder)
    reports: dict[str, Report] = {}
    for held_out in companies:
        if progress is not None:
            progress(f"measuring {held_out.name}")
        others = [row for name, named in rows.items() if name != held_out.name for row in named]
        with ranker_trained_on(others, workdir / f"ranker-without-{held_out.name}.json"):
            reports[held_out.name] = measure(held_out, examples=examples, answerer=answerer)
    return reports
