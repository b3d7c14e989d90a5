"""How fast is knowledge retrieval? Builds 1,000 synthetic help articles and measures the BM25
index build and query latency, in memory and through the database (with its per-query
"did the knowledge base change?" check).

    .venv/bin/python bench/retrieval_speed.py [--articles 1000] [--queries 2000]

Runs on its own in-memory SQLite database; it touches nothing else (no Redis, no var/).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    INSTALLED_APPS=["knowledge"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    USE_TZ=True,
    COMPANY_NAME="Brightwave",
    LOGGING_CONFIG=None,
)
django.setup()

from django.core.management import call_command  # noqa: E402

from knowledge import retrieval  # noqa: E402
from knowledge.models import Article  # noqa: E402
from knowledge.services import DEMO_DIR, parse_front_matter  # noqa: E402


def vocabulary(rng: random.Random) -> list[str]:
    """Real help-centre words (from the demo articles) plus made-up product and feature names,
    in a Zipf-like order: early words are drawn far more often than late ones."""
    words: list[str] = []
    for path in sorted(DEMO_DIR.glob("*.md")):
        _, body = parse_front_matter(path.read_text())
        words.extend(w.strip(".,:;()*?!\"'“”→").lower() for w in body.split())
    real = [w for w in dict.fromkeys(words) if w.isalpha()]
    syllable_text = "bri wa ve lum tor ka zen pho lix dra mo sta ne qui rel fa go tin ur sel pa"
    syllables = syllable_text.split()
    made_up = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(20000)}
    vocab = real + sorted(made_up)
    rng.shuffle(vocab)
    return vocab


def sentence(rng: random.Random, vocab: list[str], weights: list[float], n: int) -> str:
    words = rng.choices(vocab, weights=weights, k=n)
    return " ".join(words).capitalize() + "."


def synthetic_article(rng: random.Random, vocab: list[str], weights: list[float], i: int) -> dict:
    title = sentence(rng, vocab, weights, rng.randint(5, 9))[:-1] + "?"
    parts = [sentence(rng, vocab, weights, rng.randint(12, 25)) for _ in range(3)]
    for _section in range(rng.randint(3, 5)):
        parts.append("## " + sentence(rng, vocab, weights, rng.randint(3, 6))[:-1])
        if rng.random() < 0.4:
            parts.append(
                "\n".join(
                    f"{n}. {sentence(rng, vocab, weights, rng.randint(6, 14))}"
                    for n in range(1, rng.randint(3, 7))
                )
            )
        for _paragraph in range(rng.randint(1, 2)):
            parts.append(
                " ".join(
                    sentence(rng, vocab, weights, rng.randint(8, 20))
                    for _ in range(rng.randint(2, 4))
                )
            )
    return {
        "slug": f"article-{i}",
        "title": title,
        "body": "\n\n".join(parts),
        "url": f"https://help.example/article-{i}",
        "tags": rng.sample(vocab[:300], 3),
    }


def make_query(rng: random.Random, article: dict) -> str:
    words = [w for w in article["body"].replace("#", "").split() if len(w) > 3]
    query = rng.sample(words, min(len(words), rng.randint(3, 7)))
    if rng.random() < 0.2:  # a typo: two letters swapped
        word = query[0]
        if len(word) > 5:
            j = rng.randint(1, len(word) - 3)
            query[0] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return "how do I " + " ".join(query).lower().strip(".") + "?"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn, repeat: int, clock=time.perf_counter) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = clock()
        fn()
        samples.append((clock() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    vocab = vocabulary(rng)
    weights = [1 / (rank + 10) for rank in range(len(vocab))]
    articles = [synthetic_article(rng, vocab, weights, i) for i in range(args.articles)]
    words = sum(len(a["body"].split()) for a in articles)

    passages: list[retrieval.Passage] = []
    split_ms = timed(
        lambda: passages.__setitem__(
            slice(None),
            [
                p
                for i, a in enumerate(articles)
                for p in retrieval.article_passages(i, a["title"], a["body"], a["url"], a["tags"])
            ],
        ),
        1,
    )[0]
    build_ms = timed(lambda: retrieval.BM25Index(passages), 3)
    build_cpu_ms = timed(lambda: retrieval.BM25Index(passages), 3, time.process_time)
    index = retrieval.BM25Index(passages)

    queries = [make_query(rng, rng.choice(articles)) for _ in range(args.queries)]
    for query in queries[:50]:  # warm up
        index.search(query, 3)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 3)
        latencies.append((time.perf_counter() - started) * 1000)

    # Through the database: store the articles, then the real module-level search().
    call_command("migrate", verbosity=0)
    Article.objects.bulk_create(Article(**a) for a in articles)
    retrieval.knowledge_index.invalidate()
    rebuild_ms = timed(lambda: retrieval.knowledge_index.get(), 1)[0]
    signature_ms = timed(retrieval.knowledge_base_signature, 200)
    end_to_end = []
    for query in queries[:1000]:
        started = time.perf_counter()
        retrieval.search(query, 3)
        end_to_end.append((time.perf_counter() - started) * 1000)

    print(f"corpus: {args.articles} articles, {words:,} words, {len(passages):,} passages")
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"split into passages:        {split_ms:8.0f} ms")
    print(
        f"BM25 index build:           {statistics.median(build_ms):8.0f} ms wall,"
        f" {statistics.median(build_cpu_ms):.0f} ms CPU (median of 3, in memory;"
        f" vocabulary {len(index._idf):,} terms)"
    )
    print(f"rebuild from the database:  {rebuild_ms:8.0f} ms (load + split + build)")
    print(
        f"query, in memory:           p50 {percentile(latencies, 50):5.2f} ms"
        f"   p95 {percentile(latencies, 95):5.2f} ms   p99 {percentile(latencies, 99):5.2f} ms"
        f"   ({len(latencies)} queries)"
    )
    print(
        f"search() incl. KB check:    p50 {percentile(end_to_end, 50):5.2f} ms"
        f"   p95 {percentile(end_to_end, 95):5.2f} ms   (signature query alone:"
        f" p50 {percentile(signature_ms, 50):.2f} ms)"
    )


if __name__ == "__main__":
    main()
