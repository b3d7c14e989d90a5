"""The question encoder's arithmetic, and this CPU's own matrix throughput to hold it against
(bench/question_embedding.py --floor). No Django: tests import it as it is."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime
from onnx import TensorProto, helper, numpy_helper


def model_flops(tokens: int, hidden: int, ffn: int, layers: int) -> float:
    """Floating-point operations (a multiply-add is two) of one encoder run over `tokens`
    tokens: per layer the four attention projections, the two feed-forward matrices, and the
    attention's scores and weighted sum; layer norms, softmax and GELU are left out."""
    projections = 4 * hidden * hidden + 2 * hidden * ffn
    attention = 2 * tokens * hidden
    return 2.0 * layers * tokens * (projections + attention)


def matrix_peak_gflops(hidden: int, ffn: int, rows: int = 512, runs: int = 40) -> float:
    """This CPU's float32 matrix throughput on one thread, through the same ONNX Runtime
    kernels the embedding runs on: a (rows x hidden) @ (hidden x ffn) product, the shape of
    the feed-forward layer with rows large enough to keep the kernel at full speed."""
    weights = np.random.default_rng(0).standard_normal((hidden, ffn)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, ffn])],
        [numpy_helper.from_array(weights, "w")],
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        helper.make_model(graph).SerializeToString(), options, ["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).standard_normal((rows, hidden)).astype(np.float32)
    session.run(None, {"x": x})
    started = time.process_time()
    for _ in range(runs):
        session.run(None, {"x": x})
    seconds = time.process_time() - started
    return 2.0 * rows * hidden * ffn * runs / seconds / 1e9
