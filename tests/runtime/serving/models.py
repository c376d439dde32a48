"""ONNX models for the serving tests, built with the onnx helper API (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubemaas_runtime.bundle import MODEL, Manifest, TensorSpec, write_manifest

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, directory / MODEL)
    return directory


def mlp(directory: Path, *, features: int = 8, hidden: int = 16, classes: int = 3, seed: int = 0) -> Path:
    """x[N, features] -> logits[N, classes] and probs = softmax(logits)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, classes)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes]),
        ],
        [w1, b1, w2, b2],
    )
    return _save(graph, directory)


def mlp_bundle(
    directory: Path, name: str = "digits-mlp", features: int = 8, classes: int = 3, batch_axis: int | None = 0
) -> Path:
    """The MLP as a bundle whose manifest declares ``batchAxis`` (rows are independent)."""
    mlp(directory, features=features, classes=classes)
    manifest = Manifest(
        name=name,
        version="3",
        batchAxis=batch_axis,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, features])],
        outputs=[
            TensorSpec(name="logits", datatype="FP32", shape=[-1, classes]),
            TensorSpec(name="probs", datatype="FP32", shape=[-1, classes]),
        ],
    )
    write_manifest(directory, manifest)
    return directory


DTYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def identity_all_types(directory: Path) -> Path:
    """A bare model.onnx (no model.json): ``in_<T>[N, 2] -> out_<T>`` for every v2 datatype."""
    inputs, outputs, nodes = [], [], []
    for datatype, elem in DTYPES.items():
        t = datatype.lower()
        inputs.append(helper.make_tensor_value_info(f"in_{t}", elem, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{t}", elem, ["batch", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]))
    return _save(helper.make_graph(nodes, "identity_all_types", inputs, outputs), directory)


def slow(directory: Path, *, width: int = 1024, layers: int = 48, seed: int = 0) -> Path:
    """x[N, width] through ``layers`` tanh(x @ W) with one shared W: a few ms per row on one core."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w")
    nodes = []
    prev = "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [w],
    )
    return _save(graph, directory)


def gather(directory: Path) -> Path:
    """``y = x[:, idx]`` row-wise: an out-of-range ``idx`` makes ONNX Runtime fail at run time."""
    node = helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)
    graph = helper.make_graph(
        [node],
        "gather",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    return _save(graph, directory)


def _bare(directory: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto] | None = None) -> Path:
    return _save(helper.make_graph(nodes, directory.name, inputs, outputs, initializers or []), directory)


def ranker(directory: Path, *, features: int = 4, seed: int = 1) -> Path:
    """``x[n, 4]``, score = ``x @ w``, TopK over all n rows -> ``top[n]`` scores, ``order[n]`` row
    indices: its leading axis is "the candidates", not independent rows."""
    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((features, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["s2"]),
        helper.make_node("Flatten", ["s2"], ["s1"], axis=0),
        helper.make_node("Squeeze", ["s1", "zero"], ["score"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["k"]),
        helper.make_node("TopK", ["score", "k"], ["top", "order"], axis=0),
    ]
    consts = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([1], np.int64), "one"), w]
    return _bare(
        directory, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info("top", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("order", TensorProto.INT64, ["n"])], consts,
    )


def pairs(directory: Path, width: int = 4) -> Path:
    """``x[n, 4]`` reshaped to ``y[2n, 2]``: an output whose leading dim is twice the input's
    (``width=-1`` leaves x's second dimension dynamic, so an odd element count fails to reshape)."""
    shape = numpy_helper.from_array(np.array([-1, 2], np.int64), "shape")
    return _bare(
        directory, [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width if width > 0 else "m"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 2])], [shape],
    )


def embedding(directory: Path, *, vocab: int = 10, dim: int = 4) -> Path:
    """``ids[n]`` -> ``emb[n, 4]`` by Gather on a table: an id >= 10 fails in ONNX Runtime."""
    table = numpy_helper.from_array(np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim), "table")
    return _bare(
        directory, [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0)],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["n", dim])], [table],
    )


def conv_mean(directory: Path, kernel: int = 5) -> Path:
    """``x[batch, 1, length]`` -> Conv (``kernel`` taps of 1/kernel, no padding) -> mean: needs
    length >= kernel."""
    w = numpy_helper.from_array(np.full((1, 1, kernel), 1.0 / kernel, np.float32), "w")
    return _bare(
        directory,
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("ReduceMean", ["c"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [w],
    )


def parse_strings(directory: Path) -> Path:
    """Triton's ``simple_string`` stand-in: ``in[batch, 4]`` strings -> Cast to INT32 -> ``out = in + 1``."""
    one = numpy_helper.from_array(np.array(1, np.int32), "one")
    return _bare(
        directory,
        [helper.make_node("Cast", ["in"], ["n"], to=TensorProto.INT32), helper.make_node("Add", ["n", "one"], ["out"])],
        [helper.make_tensor_value_info("in", TensorProto.STRING, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.INT32, ["batch", 4])], [one],
    )


def log(directory: Path) -> Path:
    """``y = log(x)`` on ``x[n]``: -1 gives NaN, 0 gives -inf."""
    return _bare(
        directory, [helper.make_node("Log", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )


def simple(directory: Path, datatype: int = TensorProto.INT32) -> Path:
    """Triton's ``simple`` stand-in: ``INPUT0``, ``INPUT1`` ``[batch, 16]`` -> ``OUTPUT0`` = sum,
    ``OUTPUT1`` = difference; with ``datatype`` STRING the inputs are parsed (Cast) first and the
    outputs cast back to strings, as in Triton's ``simple_string``."""
    if datatype == TensorProto.STRING:
        nodes = [helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
                 helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
                 helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Sub", ["a", "b"], ["d"]),
                 helper.make_node("Cast", ["s"], ["OUTPUT0"], to=TensorProto.STRING),
                 helper.make_node("Cast", ["d"], ["OUTPUT1"], to=TensorProto.STRING)]
    else:
        nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                 helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    return _bare(
        directory, nodes,
        [helper.make_tensor_value_info(n, datatype, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, datatype, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )
