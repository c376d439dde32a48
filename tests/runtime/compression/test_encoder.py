"""Compression of a transformer-shaped model (nn.TransformerEncoder, trained briefly):
int8 weights really int8, fp16 weights really fp16 with fp32 I/O, drops within the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from kubemaas_runtime.bundle import MODEL, Bundle, load_bundle
from kubemaas_runtime.compression.pipeline import Outcome, compress
from kubemaas_runtime.compression.settings import CompressSettings

pytestmark = pytest.mark.slow

GATE = 0.05  # 96 eval rows: up to 4 flipped predictions


@pytest.fixture(scope="module")
def outcome(encoder: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    out = tmp_path_factory.mktemp("encoder-compressed") / "out"
    return compress(encoder.path, out, CompressSettings(mode="auto", max_accuracy_drop=GATE, latency_runs=5))


def _variant(outcome: Outcome, name: str) -> onnx.ModelProto:
    assert outcome.bundle is not None
    return onnx.load(str(outcome.bundle.path / "variants" / name / MODEL))


def _weight_elements(model: onnx.ModelProto, dtype: int) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == dtype and len(t.dims) == 2)


def test_every_variant_is_within_the_gate(outcome: Outcome) -> None:
    for m in outcome.report.variants:
        assert m.error is None, m
        assert m.accuracy_drop is not None
        assert m.accuracy_drop <= GATE, m
        assert m.agreement is not None
        assert m.agreement >= 1 - GATE, m
        assert m.passed


def test_int8_variants_hold_int8_weights(outcome: Outcome, encoder: Bundle) -> None:
    fp32_weights = _weight_elements(onnx.load(str(encoder.model_path)), TensorProto.FLOAT)
    for name in ("int8-dynamic", "int8-static"):
        int8_weights = _weight_elements(_variant(outcome, name), TensorProto.INT8)
        assert int8_weights >= 0.95 * fp32_weights, f"{name}: {int8_weights} of {fp32_weights} weights in int8"


def test_fp16_variant_keeps_fp32_inputs_and_outputs(outcome: Outcome, encoder: Bundle) -> None:
    model = _variant(outcome, "fp16")
    fp32_weights = _weight_elements(onnx.load(str(encoder.model_path)), TensorProto.FLOAT)
    assert _weight_elements(model, TensorProto.FLOAT16) == fp32_weights
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT}


def test_selected_variant_is_the_output_bundle(outcome: Outcome, tmp_path: Path) -> None:
    assert outcome.bundle is not None
    reloaded = load_bundle(outcome.bundle.path)
    assert reloaded.digest == outcome.bundle.digest
    assert reloaded.manifest.variant == outcome.report.selected
    chosen = next(m for m in outcome.report.variants if m.name == outcome.report.selected)
    fastest = min(m.p50_batch32_ms or 0.0 for m in outcome.report.variants)
    assert (chosen.p50_batch32_ms or 0.0) <= fastest * 1.02  # the policy's tie tolerance
