"""``kubemaas compress`` on the digits recipe's real trained bundle, end to end:
every variant built and measured by ONNX Runtime, the gate asserted on measured drops,
and the selected variant served by the real ``kubemaas serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kubemaas_runtime.bundle import MODEL, Bundle, load_bundle
from kubemaas_runtime.compression.pipeline import compress
from kubemaas_runtime.compression.settings import CompressSettings
from tests.runtime.compression.serving import infer_v2, served

pytestmark = pytest.mark.slow

GATE = 0.01  # the digits target: at most 1 point of top-1


@dataclass
class Run:
    out: Path
    returncode: int
    stdout: str
    stderr: str
    termination: dict[str, object]

    @property
    def report(self) -> dict[str, object]:
        return dict(json.loads((self.out / "compression.json").read_text()))

    def variant(self, name: str) -> dict[str, object]:
        return next(v for v in self.report["variants"] if v["name"] == name)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def compressed(digits: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("digits-compressed")
    env = {**os.environ, "KUBEMAAS_TERMINATION_LOG": str(tmp / "termination-log")}
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "compress", "--bundle", str(digits.path),
         "--output", str(tmp / "out"), "--mode", "auto", "--max-accuracy-drop", str(GATE), "--latency-runs", "10"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    termination = json.loads((tmp / "termination-log").read_text())
    return Run(tmp / "out", done.returncode, done.stdout, done.stderr, termination)


def _predict(path: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": rows})[0])


def test_every_variant_is_measured(compressed: Run) -> None:
    assert compressed.returncode == 0, compressed.stderr
    names = [v["name"] for v in compressed.report["variants"]]  # type: ignore[attr-defined]
    assert names == ["fp32", "int8-dynamic", "int8-static", "fp16"]
    for name in names:
        v = compressed.variant(name)
        assert v["error"] is None
        assert (compressed.out / "variants" / name / MODEL).stat().st_size == v["sizeBytes"]
        assert 0 < v["p50Batch1Ms"] <= v["p95Batch1Ms"]  # type: ignore[operator]
        assert 0 < v["p50Batch32Ms"] <= v["p95Batch32Ms"]  # type: ignore[operator]


def test_int8_variants_meet_the_digits_target(compressed: Run) -> None:
    fp32 = compressed.variant("fp32")
    for name in ("int8-dynamic", "int8-static"):
        v = compressed.variant(name)
        assert v["accuracyDrop"] <= GATE, v  # type: ignore[operator]
        assert v["passed"] is True
        assert v["sizeBytes"] * 3 < fp32["sizeBytes"]  # type: ignore[operator]  # int8 weights: ~1/4 of fp32


def test_output_is_a_bundle_of_the_selected_variant(compressed: Run, digits: Bundle) -> None:
    selected = compressed.report["selected"]
    bundle = load_bundle(compressed.out)
    assert bundle.manifest.variant == selected
    assert bundle.manifest.metrics["accuracyDrop"] <= GATE
    assert (compressed.out / MODEL).read_bytes() == (compressed.out / "variants" / str(selected) / MODEL).read_bytes()
    assert compressed.termination["selected"] == selected
    fetched = sum((compressed.out / rel).stat().st_size for rel in ["model.json", *bundle.manifest.files])
    assert compressed.termination["bundle"] == {"uri": str(compressed.out), "sha256": bundle.digest, "sizeBytes": fetched}
    assert bundle.manifest.inputs == digits.manifest.inputs


def test_served_variant_agrees_with_fp32_within_the_gate(compressed: Run, digits: Bundle, tmp_path: Path) -> None:
    with np.load(digits.eval_path) as data:
        rows, labels = data["inputs"].astype(np.float32), data["labels"]
    fp32 = _predict(digits.model_path, rows).argmax(axis=1)
    with served(compressed.out, tmp_path / "serve.log") as url:
        answers = infer_v2(url, digits.manifest.name, rows)
    # Not bit-equal to a direct session: int8-dynamic picks activation scales per batch, and the
    # server forms its own batches. The same top-1 on all but a gate's worth of rows is the bar.
    direct = _predict(compressed.out / MODEL, rows)
    assert float(np.mean(answers.argmax(axis=1) != direct.argmax(axis=1))) <= GATE
    assert float(np.abs(answers - direct).max()) < 0.05 * float(np.abs(direct).max())
    disagreement = float(np.mean(answers.argmax(axis=1) != fp32))
    drop = float(np.mean(fp32 == labels) - np.mean(answers.argmax(axis=1) == labels))
    assert disagreement <= GATE, f"{disagreement:.4f} of {len(rows)} rows differ from fp32"
    assert drop <= GATE


def test_mode_int8_static_ships_a_qdq_model(digits: Bundle, tmp_path: Path) -> None:
    outcome = compress(digits.path, tmp_path / "out", CompressSettings(mode="int8-static", max_accuracy_drop=GATE, latency_runs=3))
    assert outcome.bundle is not None
    assert outcome.bundle.manifest.variant == "int8-static"
    model = onnx.load(str(tmp_path / "out" / MODEL))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(int8) == 3  # the digits recipe's three Linear weights
