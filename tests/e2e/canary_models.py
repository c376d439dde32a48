"""Bad new versions of a served tensor model, for the real-pod canary tests of `make e2e`.

Each builder takes the stable bundle's manifest and writes a bundle with the SAME input and
output signature (names, datatypes, shapes, batch axis, labels), so every client request that
the stable version accepts is a valid request for the new one too, as it must be for a canary:

* ``failing``: loads, passes its warm-up (on zeros) and becomes Ready, then fails every request
  with a non-zero input (the server answers 400, the way a model that rejects what the stable
  one accepted looks to clients and to the canary analysis);
* ``slow``: answers correctly shaped outputs, about 20 ms per row on one core (more than ten
  times the digits MLP's whole request time).

Adapted from tests/operator/rollout/models.py (the loopback analysis tests' x[N, 8] models) to
any ``[-1, features] -> [-1, classes]`` FP32 signature. Neither bundle ships ``eval.npz``: the
server would warm up on its first row, and the failing model must get past its warm-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubemaas_runtime.bundle import MODEL, Bundle, Manifest, write_manifest

OPSET = [helper.make_opsetid("", 17)]


def _dims(manifest: Manifest) -> tuple[str, str, int, int]:
    """(input name, output name, features, classes) of a ``[-1, F] -> [-1, K]`` FP32 model.

    Raises ValueError naming the tensor when the signature is not of that form.
    """
    if len(manifest.inputs) != 1 or len(manifest.outputs) < 1:
        raise ValueError(f"expected one input and an output, got inputs {manifest.inputs} outputs {manifest.outputs}")
    x, y = manifest.inputs[0], manifest.outputs[0]
    for spec in (x, y):
        if spec.datatype != "FP32" or len(spec.shape) != 2 or spec.shape[1] < 1:
            raise ValueError(f"tensor {spec.name!r}: expected FP32 [-1, n], got {spec.datatype} {spec.shape}")
    return x.name, y.name, x.shape[1], y.shape[1]


def _write(directory: Path, stable: Manifest, version: str, nodes: list[onnx.NodeProto],
           inits: list[onnx.TensorProto]) -> Bundle:
    x, y, features, classes = _dims(stable)
    directory.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        nodes, f"{stable.name}-{version}",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, directory / MODEL)
    manifest = Manifest(
        name=stable.name, version=version, task=stable.task, inputs=stable.inputs[:1], outputs=stable.outputs[:1],
        labels=stable.labels, batchAxis=stable.batch_axis,
    )
    return write_manifest(directory, manifest, files=[MODEL])


def failing(directory: Path, stable: Manifest) -> Bundle:
    """A version that fails every request whose input is not all zeros (400 from the server).

    ``y = GatherElements(x, ceil(|x|) * 100) @ W``: a zero input gathers index 0 (so the warm-up
    on zeros passes and the pod becomes Ready), any other value an index out of range, which ONNX
    Runtime rejects at run time. Raises ValueError when ``stable`` is not ``[-1, F] -> [-1, K]``.
    """
    x, y, features, classes = _dims(stable)
    w = np.ones((features, classes), dtype=np.float32)
    nodes = [
        helper.make_node("Abs", [x], ["a"]),
        helper.make_node("Ceil", ["a"], ["c"]),
        helper.make_node("Mul", ["c", "hundred"], ["f"]),
        helper.make_node("Cast", ["f"], ["idx"], to=TensorProto.INT64),
        helper.make_node("GatherElements", [x, "idx"], ["g"], axis=1),
        helper.make_node("MatMul", ["g", "w"], [y]),
    ]
    inits = [numpy_helper.from_array(np.array(100.0, dtype=np.float32), "hundred"), numpy_helper.from_array(w, "w")]
    return _write(directory, stable, "canary-failing", nodes, inits)


def slow(directory: Path, stable: Manifest, width: int = 1024, layers: int = 96) -> Bundle:
    """A version that answers correctly shaped outputs slowly: ``x`` projected to ``width``, then
    ``layers`` x ``tanh(h @ W)``, then projected to the classes (about ``layers`` x ``width``^2
    multiply-adds per row: about 20 ms on one core at the defaults, against about 1 ms for the
    whole request to the digits MLP).

    Raises ValueError when ``stable`` is not ``[-1, F] -> [-1, K]``.
    """
    x, y, features, classes = _dims(stable)
    rng = np.random.default_rng(1)
    p = (rng.standard_normal((features, width)) / np.sqrt(features)).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    q = (rng.standard_normal((width, classes)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", [x, "p"], ["h0"])]
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"])]
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "q"], [y]))
    inits = [numpy_helper.from_array(a, n) for a, n in ((p, "p"), (w, "w"), (q, "q"))]
    return _write(directory, stable, "canary-slow", nodes, inits)
