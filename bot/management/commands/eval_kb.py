"""python manage.py eval_kb FILE.jsonl: how well the knowledge base answers a question set."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from bot.evaluation import ANSWERERS, AnswererUnavailable, bot_answerer
from knowledge import search as knowledge_search
from knowledge.evaluation import Question, QuestionSetError, Report, evaluate, read_questions
from knowledge.search import ranking


class Command(BaseCommand):
    help = (
        "Run a question set (JSON Lines: question, expected slug or 'none', optional kind) "
        "through retrieval and the bot's answerer (offline, or the configured model with "
        "--answerer model); print hit@1, hit@3, MRR, abstention precision and recall, and "
        "latency."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The question set, .jsonl")
        parser.add_argument(
            "--min-confidence",
            type=float,
            help="Evaluate with this abstain threshold instead of KB_MIN_CONFIDENCE.",
        )
        parser.add_argument(
            "--answerer",
            choices=ANSWERERS,
            default="offline",
            help=(
                "Who answers: the offline answerer (default), or the configured model with the "
                "grounded prompt, whose 'the passages don't answer this' counts as an abstention."
            ),
        )
        parser.add_argument("--misses", action="store_true", help="List every wrong outcome.")
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            questions = read_questions(options["file"])
        except (OSError, QuestionSetError) as exc:
            raise CommandError(str(exc)) from exc
        overrides: dict[str, Any] = {}
        if options["min_confidence"] is not None:
            overrides["KB_MIN_CONFIDENCE"] = options["min_confidence"]
        with override_settings(**overrides):
            self._run(questions, options)

    def _run(self, questions: list[Question], options: dict[str, Any]) -> None:

        def progress(done: int) -> None:
            if sys.stderr.isatty():
                sys.stderr.write(f"\r{done}/{len(questions)} questions")
                sys.stderr.flush()

        try:
            answerer = bot_answerer(options["answerer"])
        except AnswererUnavailable as exc:
            raise CommandError(str(exc)) from exc
        report = evaluate(questions, answerer, progress=progress)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        if options["json"]:
            figures: dict[str, Any] = dict(report.summary())
            figures["answerer"] = options["answerer"]
            figures["by_kind"] = {k: r.summary() for k, r in report.by_kind().items()}
            self.stdout.write(json.dumps(figures, indent=2))
            return
        self._print(report, options["misses"], options["answerer"])

    def _print(self, report: Report, misses: bool, answerer: str) -> None:
        s = report.summary()
        self.stdout.write(
            f"{s['questions']} questions ({s['answerable']} answerable), "
            f"threshold {settings.KB_MIN_CONFIDENCE:g}"
            + (", answered by the model" if answerer == "model" else "")
        )
        self.stdout.write(f"Retrieval: {_retrieval_description()}")
        rows = [
            ("hit@1", s["hit@1"]),
            ("hit@3", s["hit@3"]),
            ("MRR", s["mrr"]),
            ("answered with the right source", s["answered_correctly"]),
            ("abstention precision", s["abstention_precision"]),
            ("abstention recall", s["abstention_recall"]),
        ]
        for name, value in rows:
            self.stdout.write(f"  {name:<32} {_fmt(value)}")
        self.stdout.write(
            f"  {'retrieval latency p50 / p95':<32} "
            f"{s['retrieval_p50_ms']:.1f} / {s['retrieval_p95_ms']:.1f} ms"
        )
        self.stdout.write(
            f"  {'answer latency p50 / p95':<32} "
            f"{s['answer_p50_ms']:.1f} / {s['answer_p95_ms']:.1f} ms"
        )
        self.stdout.write("By kind:  n  hit@1  abstained")
        for kind, group in report.by_kind().items():
            abstained = sum(o.abstained for o in group.outcomes) / len(group.outcomes)
            hit = _fmt(group.hit_at(1))
            self.stdout.write(f"  {kind:<14} {len(group.outcomes):>3}  {hit:>5}  {abstained:.2f}")
        if misses:
            self.stdout.write("Wrong outcomes:")
            for o in report.outcomes:
                expected = o.question.expected
                if expected == "none":
                    wrong = not o.abstained
                else:
                    wrong = o.abstained or o.answer_sources[:1] != (expected,)
                if wrong:
                    got = "abstained" if o.abstained else ",".join(o.answer_sources) or "-"
                    self.stdout.write(
                        f"  [{o.question.kind}] {o.question.question!r}: expected {expected}, "
                        f"answered {got} (retrieval: {','.join(o.ranked_slugs[:3])}, "
                        f"confidence {o.top_confidence:.2f})"
                    )


def _retrieval_description() -> str:
    """What ranks and judges the hits: a question set's figures mean little without it."""
    index = knowledge_search.knowledge_index.get()
    if not index.is_hybrid:
        return "BM25 alone (no embeddings)"
    ranker = index.ranker
    if ranker is None:
        return "hybrid score (no ranker)"
    trained_on = ranker.trained.get("on") or ["?"]
    names = ", ".join(str(name) for name in trained_on) if isinstance(trained_on, list) else "?"
    examples = len(index.examples) if index.examples is not None else 0
    return f"learned ranker {ranking.ranker_path()} (trained on {names}), " + (
        f"{examples} example question{'' if examples == 1 else 's'} "
        "(one identical to a question is left out)"
        if examples
        else "no example questions"
    )


def _fmt(value: float | int) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.2f}"
