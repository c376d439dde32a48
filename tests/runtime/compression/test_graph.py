"""Gemm -> MatMul + Add keeps the outputs and lets quantize_dynamic reach nn.Linear weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from kubemaas_runtime.compression.graph import gemm_to_matmul


def _linear(path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16)).astype(np.float32)  # torch layout [out, in], so transB=1
    b = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_rewrite_keeps_outputs(tmp_path: Path) -> None:
    _linear(tmp_path / "gemm.onnx")
    model = onnx.load(str(tmp_path / "gemm.onnx"))
    assert gemm_to_matmul(model) == 1
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "matmul.onnx"))
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "matmul.onnx", x), _run(tmp_path / "gemm.onnx", x), rtol=1e-5, atol=1e-5)


def test_dynamic_quantization_reaches_the_rewritten_weights(tmp_path: Path) -> None:
    _linear(tmp_path / "gemm.onnx")
    quantize_dynamic(str(tmp_path / "gemm.onnx"), str(tmp_path / "gemm-q.onnx"), weight_type=QuantType.QInt8)
    model = onnx.load(str(tmp_path / "gemm.onnx"))
    gemm_to_matmul(model)
    onnx.save(model, str(tmp_path / "matmul.onnx"))
    quantize_dynamic(str(tmp_path / "matmul.onnx"), str(tmp_path / "matmul-q.onnx"), weight_type=QuantType.QInt8)
    ops = {name: Counter(n.op_type for n in onnx.load(str(tmp_path / name)).graph.node) for name in ("gemm-q.onnx", "matmul-q.onnx")}
    assert ops["gemm-q.onnx"]["MatMulInteger"] == 0  # Gemm is not in the dynamic registry
    assert ops["matmul-q.onnx"]["MatMulInteger"] == 1
