"""Fixtures for the storage tests: a small but real bundle (a tiny ONNX graph, eval set, manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kubemaas_runtime.bundle import EVAL_SET, MODEL, Bundle, Manifest, TensorSpec, write_manifest


def build_bundle(directory: Path) -> Bundle:
    directory.mkdir(parents=True, exist_ok=True)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph), str(directory / MODEL))
    rng = np.random.default_rng(0)
    np.savez(directory / EVAL_SET, inputs=rng.random((5, 4), dtype=np.float32), labels=np.arange(5) % 3)
    (directory / "variants" / "int8").mkdir(parents=True)
    (directory / "variants" / "int8" / MODEL).write_bytes(b"not listed in the manifest")
    manifest = Manifest(
        name="tiny",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="output", datatype="FP32", shape=[-1, 3])],
        labels=["a", "b", "c"],
    )
    return write_manifest(directory, manifest)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return build_bundle(tmp_path / "source")
