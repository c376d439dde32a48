"""Stable, good, failing and slow versions of one model (same name, same input), built with onnx helpers.

Every version takes ``x[N, 8]`` FP32 and is served as model ``m``, so one client request
works against any of them, as it must for a canary of a new version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubemaas_runtime.bundle import MODEL, Manifest, TensorSpec, write_manifest

FEATURES = 8
NAME = "m"
OPSET = [helper.make_opsetid("", 17)]


def _bundle(directory: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], width: int,
            version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        nodes, f"{NAME}-{version}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, directory / MODEL)
    write_manifest(directory, Manifest(
        name=NAME, version=version, batchAxis=0,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, width])],
    ))
    return directory


def good(directory: Path, seed: int = 0) -> Path:
    """``y = relu(x @ W)``: a healthy version (different seeds are different 'retrained' weights)."""
    w = np.random.default_rng(seed).standard_normal((FEATURES, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return _bundle(directory, nodes, [numpy_helper.from_array(w, "w")], 4, f"good-{seed}")


def failing(directory: Path) -> Path:
    """Loads and warms up (on zeros), then fails every request whose inputs are not all zero.

    ``y = GatherElements(x, ceil(|x|) * 100)``: a zero input gathers index 0, anything else an
    index out of range, which ONNX Runtime rejects at run time (the server answers 400: a
    kernel rejecting a signature-valid value is taken to be the value's fault).
    """
    hundred = numpy_helper.from_array(np.array(100.0, dtype=np.float32), "hundred")
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Ceil", ["a"], ["c"]),
        helper.make_node("Mul", ["c", "hundred"], ["f"]),
        helper.make_node("Cast", ["f"], ["idx"], to=TensorProto.INT64),
        helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1),
    ]
    return _bundle(directory, nodes, [hundred], FEATURES, "failing")


def slow(directory: Path, width: int = 1024, layers: int = 48) -> Path:
    """``x`` projected to ``width`` then ``layers`` x tanh(h @ W): tens of ms per request on one core."""
    rng = np.random.default_rng(1)
    p = (rng.standard_normal((FEATURES, width)) / np.sqrt(FEATURES)).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "p"], ["h0"])]
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"])]
    nodes.append(helper.make_node("Identity", [f"h{layers}"], ["y"]))
    return _bundle(directory, nodes, [numpy_helper.from_array(p, "p"), numpy_helper.from_array(w, "w")],
                   width, "slow")
