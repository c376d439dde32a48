"""``kubemaas compress`` on a text-generation bundle: MatMulNBits int4/int8 variants gated on perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from kubemaas_runtime.bundle import load_bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.compression.textgen import TextgenMeasurement, _select
from kubemaas_runtime.generation.engine import Decoder
from kubemaas_runtime.generation.folder import read_genai_config

pytestmark = pytest.mark.slow


def test_auto_builds_measures_and_ships_a_variant(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("KUBEMAAS_TERMINATION_LOG", str(tmp_path / "termination-log"))
    assert main(["compress", "--bundle", str(tiny_bundle), "--output", str(out), "--max-perplexity-increase",
                 "0.02"]) == 0
    report = json.loads((out / "compression.json").read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    assert set(by_name) == {"fp32", "int4", "int8"}
    assert by_name["int4"]["size_bytes"] < by_name["int8"]["size_bytes"] < by_name["fp32"]["size_bytes"]
    assert all(v["tokens_per_second"] > 0 and v["ttft_ms"] > 0 for v in by_name.values())
    bundle = load_bundle(out)  # checksums of the swapped-in decoder
    assert bundle.manifest.variant == report["selected"]
    assert bundle.manifest.metrics["perplexityIncrease"] <= 0.02
    fetched = sum((out / rel).stat().st_size for rel in ["model.json", *bundle.manifest.files])
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["bundle"] == {"uri": str(out), "sha256": bundle.digest, "sizeBytes": fetched}
    ops = {n.op_type for n in onnx.load(str(out / "variants" / "int4" / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    assert "MatMul" not in ops
    decoder = Decoder(out, read_genai_config(out), slots=1)
    assert decoder.prefill(0, [1, 2, 3]).shape == (512,)


def _m(name: str, increase: float, rate: float, gate: float = 0.05) -> TextgenMeasurement:
    return TextgenMeasurement(name, 1, 10 * (1 + increase), increase, 1.0, rate, increase <= gate)


def test_auto_picks_the_fastest_variant_within_the_gate() -> None:
    results = [_m("fp32", 0.0, 100), _m("int4", 0.08, 300), _m("int8", 0.01, 200)]
    assert _select(results, "auto", 0.05)[0] == "int8"


def test_a_named_variant_over_the_gate_selects_nothing_and_says_why() -> None:
    selected, reason = _select([_m("fp32", 0.0, 100), _m("int4", 0.08, 300)], "int4", 0.05)
    assert selected is None
    assert reason == "mode int4: perplexity +8.00% exceeds maxPerplexityIncrease 5.00%"


def test_tensor_modes_are_refused_for_text_generation(tiny_bundle: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "--bundle", str(tiny_bundle), "--output", str(tmp_path / "o"), "--mode", "fp16"]) == 2
    assert "text-generation bundles take" in capsys.readouterr().err
