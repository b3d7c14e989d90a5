"""python manage.py eval_kb FILE.jsonl: how well the knowledge base answers a question set.

python manage.py eval_kb --companies bench/companies: the same on other companies' knowledge
bases, each loaded alone in a transaction that is rolled back (the installed knowledge base is
never touched), with the shipped ranker, none, or one trained leave-one-company-out.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from bot.evaluation import (
    ANSWERERS,
    AnswererUnavailable,
    Teaching,
    bot_answerer,
    company_figures,
    leave_one_company_out,
    measure,
    teaching_curve,
)
from knowledge import search as knowledge_search
from knowledge.benchmark import KnowledgeBaseFolder, KnowledgeBaseFolderError, folders
from knowledge.evaluation import (
    Outcome,
    Question,
    QuestionSetError,
    Report,
    evaluate,
    read_questions,
)
from knowledge.search import ranking

RANKERS = ("shipped", "off", "loco")


class Command(BaseCommand):
    help = (
        "Run a question set (JSON Lines: question, expected slug or 'none', optional kind) "
        "through retrieval and the bot's answerer (offline, or the configured model with "
        "--answerer model); print hit@1, hit@3, MRR, abstention precision and recall, and "
        "latency. With --companies DIR, measure every company folder under DIR instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="The question set, .jsonl")
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
        parser.add_argument(
            "--per-question", action="store_true", help="Every question's outcome (with --json)."
        )
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
        companies = parser.add_argument_group("other companies' knowledge bases")
        companies.add_argument(
            "--companies",
            metavar="DIR",
            help="Measure each folder under DIR (articles/, questions.jsonl, examples.jsonl).",
        )
        companies.add_argument(
            "--only", help="Comma-separated company folder names to measure (default: all)."
        )
        companies.add_argument(
            "--ranker",
            choices=RANKERS,
            default="shipped",
            help=(
                "shipped: the configured ranker; off: the hybrid score alone; loco: for each "
                "company a ranker trained on all the others (and the demo with --with-demo)."
            ),
        )
        companies.add_argument(
            "--with-demo",
            action="store_true",
            help="With --ranker loco, also train on the demo company's question sets.",
        )
        companies.add_argument(
            "--examples",
            type=int,
            default=0,
            help="Teach each company its first N example questions (default 0: a fresh install).",
        )
        companies.add_argument(
            "--teaching",
            metavar="N,N,...",
            help=(
                "The teaching curve instead: each company taught its first N example questions "
                "for each N, against it untaught, on the questions the examples cover and on "
                "the others (with the shipped ranker)."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        overrides: dict[str, Any] = {}
        if options["min_confidence"] is not None:
            overrides["KB_MIN_CONFIDENCE"] = options["min_confidence"]
        with override_settings(**overrides):
            if options["companies"]:
                self._companies(options)
                return
            if not options["file"]:
                raise CommandError("Give a question set (FILE.jsonl) or --companies DIR.")
            try:
                questions = read_questions(options["file"])
            except (OSError, QuestionSetError) as exc:
                raise CommandError(str(exc)) from exc
            self._run(questions, options)

    # --- One question set on the installed knowledge base -----------------------------------

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
            figures = _report_json(report, options)
            figures["answerer"] = options["answerer"]
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
        self.stdout.write(f"Retrieval: {_retrieval_description(report)}")
        rows = [
            ("hit@1", s["hit@1"]),
            ("hit@3", s["hit@3"]),
            ("MRR", s["mrr"]),
            ("answered with the right source", s["answered_correctly"]),
            ("abstention precision", s["abstention_precision"]),
            ("abstention recall", s["abstention_recall"]),
            ("answerable ones refused", s["wrongly_refused"]),
        ]
        for name, value in rows:
            self.stdout.write(f"  {name:<32} {_fmt(value)}")
        self.stdout.write(
            f"  {'retrieval latency p50 / p95':<32} "
            f"{_fmt(s['retrieval_p50_ms'], 1)} / {_fmt(s['retrieval_p95_ms'], 1)} ms"
        )
        self.stdout.write(
            f"  {'answer latency p50 / p95':<32} "
            f"{_fmt(s['answer_p50_ms'], 1)} / {_fmt(s['answer_p95_ms'], 1)} ms"
        )
        self.stdout.write("By kind:          n  hit@1  abstained")
        for kind, group in report.by_kind().items():
            abstained = sum(o.abstained for o in group.outcomes) / len(group.outcomes)
            hit = _fmt(group.hit_at(1))
            self.stdout.write(f"  {kind:<16} {len(group.outcomes):>3}  {hit:>5}  {abstained:.2f}")
        if misses:
            self.stdout.write("Wrong outcomes:")
            for o in report.outcomes:
                if report.is_miss(o):
                    self.stdout.write(_miss_line(o))

    # --- Other companies' knowledge bases ---------------------------------------------------

    def _companies(self, options: dict[str, Any]) -> None:
        try:
            chosen = folders(options["companies"])
        except KnowledgeBaseFolderError as exc:
            raise CommandError(str(exc)) from exc
        if options["only"]:
            wanted = {name.strip() for name in options["only"].split(",") if name.strip()}
            unknown = wanted - {folder.name for folder in chosen}
            if unknown:
                raise CommandError(f"No company folder named {', '.join(sorted(unknown))}")
            chosen = [folder for folder in chosen if folder.name in wanted]

        def progress(step: str) -> None:
            self.stderr.write(f"{step}…")

        if options["teaching"]:
            self._teaching(chosen, options)
            return
        try:
            if options["ranker"] == "loco":
                extra = [KnowledgeBaseFolder.demo()] if options["with_demo"] else []
                with tempfile.TemporaryDirectory(prefix="eval-kb-") as workdir:
                    reports = leave_one_company_out(
                        chosen,
                        also_train_on=extra,
                        examples=options["examples"],
                        answerer=options["answerer"],
                        workdir=Path(workdir),
                        progress=progress,
                    )
            else:
                reports = {}
                off = {"KB_RANKER_PATH": "off"} if options["ranker"] == "off" else {}
                with override_settings(**off):
                    for folder in chosen:
                        progress(f"measuring {folder.name}")
                        reports[folder.name] = measure(
                            folder, examples=options["examples"], answerer=options["answerer"]
                        )
        except (AnswererUnavailable, KnowledgeBaseFolderError, QuestionSetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ranker": options["ranker"],
                        "examples": options["examples"],
                        "answerer": options["answerer"],
                        "companies": {
                            name: {**company_figures(report), **_report_json(report, options)}
                            for name, report in reports.items()
                        },
                        **_average_and_worst(reports),
                    },
                    indent=2,
                )
            )
            return
        self._print_companies(reports, options)

    def _teaching(self, chosen: list[KnowledgeBaseFolder], options: dict[str, Any]) -> None:
        try:
            counts = [int(n) for n in options["teaching"].split(",") if n.strip()]
        except ValueError as exc:
            raise CommandError("--teaching takes counts of example questions: 5,10,30") from exc
        if not counts or min(counts) < 1:
            raise CommandError("--teaching takes counts of example questions above 0: 5,10,30")
        curves: dict[str, list[Teaching]] = {}
        try:
            for folder in chosen:
                self.stderr.write(f"teaching {folder.name}…")
                curves[folder.name] = teaching_curve(folder, counts, answerer=options["answerer"])
        except (AnswererUnavailable, KnowledgeBaseFolderError, QuestionSetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {name: [asdict(t) for t in curve] for name, curve in curves.items()}, indent=2
                )
            )
            return
        self.stdout.write(
            "Teaching curve: before → after N example questions; covered: the questions whose "
            "article (or 'none') got an example; others: the rest."
        )
        columns = (
            "hit@1",
            "answered_correctly",
            "in_scope_wrongly_refused",
            "out_of_scope_refused",
        )
        labels = ("hit@1", "right src", "wrongly", "refused")
        self.stdout.write(
            f"{'':<10}{'N':>4}  {'':<8}" + "".join(f"{label:>16}" for label in labels)
        )
        for name, curve in curves.items():
            for t in curve:
                for group, before, after in (
                    ("covered", t.covered_before, t.covered_after),
                    ("others", t.not_covered_before, t.not_covered_after),
                ):
                    cells = "".join(
                        f"{_fmt(before[c]) + ' → ' + _fmt(after[c]):>16}" for c in columns
                    )
                    self.stdout.write(f"{name:<10}{t.examples:>4}  {group:<8}{cells}")

    def _print_companies(self, reports: dict[str, Report], options: dict[str, Any]) -> None:
        self.stdout.write(
            f"ranker: {options['ranker']}"
            + (" (+ demo)" if options["ranker"] == "loco" and options["with_demo"] else "")
            + f", example questions taught: {options['examples']}, answerer: {options['answerer']}"
            + f", threshold {settings.KB_MIN_CONFIDENCE:g}"
        )
        columns = list(company_figures(Report()))
        self.stdout.write(f"{'':<12}" + "".join(f"{COLUMN_LABELS[c]:>12}" for c in columns))
        for name, report in reports.items():
            figures = company_figures(report)
            self.stdout.write(f"{name:<12}" + "".join(f"{_fmt(figures[c]):>12}" for c in columns))
        summary = _average_and_worst(reports)
        for label in ("average", "worst"):
            row = summary[label]
            self.stdout.write(f"{label:<12}" + "".join(f"{_fmt(row[c]):>12}" for c in columns))
        self.stdout.write(
            "x-lingual: the question in another language than its article; angry/long: "
            "angry and verbose questions; refused: share of the unanswerable questions the bot "
            "declined; wrongly: share of the answerable ones it declined; right src: answered "
            "from the expected article; not ours: share of the questions about other companies "
            "and the prompt injections declined as not about us; wrongly n-o: share of the "
            "answerable ones declined so."
        )
        if options["misses"]:
            for name, report in reports.items():
                self.stdout.write(f"Wrong outcomes, {name}:")
                for o in report.outcomes:
                    if report.is_miss(o):
                        self.stdout.write(_miss_line(o))


COLUMN_LABELS = {
    "hit@1": "hit@1",
    "hit@3": "hit@3",
    "mrr": "MRR",
    "cross_lingual_hit@1": "x-lingual@1",
    "angry_verbose_hit@1": "angry/long@1",
    "out_of_scope_refused": "refused",
    "in_scope_wrongly_refused": "wrongly",
    "answered_correctly": "right src",
    "other_domain_declined": "not ours",
    "in_scope_declined_as_other_domain": "wrongly n-o",
}

#: Figures where lower is better (the worst company is the one with the highest).
LOWER_IS_BETTER = {"in_scope_wrongly_refused", "in_scope_declined_as_other_domain"}


def _average_and_worst(reports: dict[str, Report]) -> dict[str, dict[str, float | None]]:
    per_company = [company_figures(report) for report in reports.values()]
    average: dict[str, float | None] = {}
    worst: dict[str, float | None] = {}
    for name in company_figures(Report()):
        numbers = [v for figures in per_company if (v := figures[name]) is not None]
        average[name] = sum(numbers) / len(numbers) if numbers else None
        if not numbers:
            worst[name] = None
        else:
            worst[name] = max(numbers) if name in LOWER_IS_BETTER else min(numbers)
    return {"average": average, "worst": worst}


def _miss_line(o: Outcome) -> str:
    got = (
        "declined as not ours"
        if o.out_of_domain
        else "abstained"
        if o.abstained
        else ",".join(o.answer_sources) or "-"
    )
    return (
        f"  [{o.question.kind}] {o.question.question!r}: expected {o.question.expected}, "
        f"answered {got} (retrieval: {','.join(o.ranked_slugs[:3])}, "
        f"confidence {o.top_confidence:.2f})"
    )


def _report_json(report: Report, options: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = dict(report.summary())
    figures["by_kind"] = {kind: group.summary() for kind, group in report.by_kind().items()}
    if options["misses"]:
        figures["misses"] = [o.as_dict() for o in report.outcomes if report.is_miss(o)]
    if options["per_question"]:
        figures["questions_answered"] = [o.as_dict() for o in report.outcomes]
    return figures


def _retrieval_description(report: Report) -> str:
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
    described = f"learned ranker {ranking.ranker_path()} (trained on {names}), " + (
        f"{examples} example question{'' if examples == 1 else 's'}"
        if examples
        else "no example questions"
    )
    if report.examples_left_out:
        described += (
            f"; {report.examples_left_out} question(s) are example questions themselves: "
            "their example was left out"
        )
    return described


def _fmt(value: float | int | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
