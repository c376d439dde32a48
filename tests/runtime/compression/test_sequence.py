"""Token-id models (the sequence recipe's INT64 ``tokens``) through every variant (issue 11).

The inputs keep their declared datatype through calibration (int8-static), measurement and
accuracy; before, eval.npz was cast to float32 and ONNX Runtime refused it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kubemaas_runtime.bundle import (
    EVAL_SET,
    MODEL,
    Bundle,
    TensorSpec,
    load_bundle,
    write_manifest,
)
from kubemaas_runtime.cli import main
from kubemaas_runtime.compression.measure import as_declared, open_session
from kubemaas_runtime.compression.report import REPORT
from tests.runtime.compression.models import boundary_bundle

EVERY_VARIANT = ["fp32", "int8-dynamic", "int8-static", "fp16"]
QUICK = ["--latency-runs", "2", "--calibration-rows", "32"]


def test_sequence_bundle_compresses_through_every_variant(
    sequence: Bundle, tmp_path: Path, termination_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [(i.name, i.datatype) for i in sequence.manifest.inputs] == [("tokens", "INT64")]
    code = main(["compress", "--bundle", str(sequence.path), "--output", str(tmp_path / "out"), "--mode", "auto", *QUICK])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((tmp_path / "out" / REPORT).read_text())
    assert [v["name"] for v in report["variants"]] == EVERY_VARIANT
    for variant in report["variants"]:
        assert variant.get("error") is None, variant
        assert 0.0 <= variant["accuracy"] <= 1.0, variant
        assert variant["accuracyDrop"] == pytest.approx(report["baseline"]["accuracy"] - variant["accuracy"])
    served = load_bundle(tmp_path / "out")
    with np.load(served.eval_path) as data:
        tokens = data["inputs"]
    assert tokens.dtype == np.int64  # shipped as stored, not cast
    logits = open_session(served.model_path).run(None, {"tokens": tokens[:3]})[0]
    assert logits.shape == (3, 4)
    assert f"selected {report['selected']}" in out


def test_strict_gate_fails_naming_the_variants_that_missed_it(
    sequence: Bundle, tmp_path: Path, termination_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eval rows on fp32's decision boundary: int8 weights change predictions, so drop > 0."""
    bundle = boundary_bundle(sequence, tmp_path / "boundary")
    code = main(["compress", "--bundle", str(bundle.path), "--output", str(tmp_path / "auto"), "--mode", "auto",
                 "--max-accuracy-drop", "0", *QUICK])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "auto" / REPORT).read_text())
    assert report["baseline"]["accuracy"] == 1.0  # labelled by fp32 itself
    missed = [v["name"] for v in report["variants"] if not v["passed"]]
    assert {"int8-dynamic", "int8-static"} <= set(missed)
    assert report["selected"] not in missed
    for name in missed:
        assert f"{name} (drop" in report["reason"]

    code = main(["compress", "--bundle", str(bundle.path), "--output", str(tmp_path / "strict"), "--mode", "int8-static",
                 "--max-accuracy-drop", "0", *QUICK])
    err = capsys.readouterr().err
    assert code == 1
    assert "no variant meets the gate (mode int8-static, max accuracy drop 0.0)" in err
    assert "missed by int8-static (drop 0." in err
    assert json.loads(termination_log.read_text())["selected"] is None


def test_float_eval_rows_for_a_token_input_are_refused_naming_both(
    sequence: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "float-eval"
    bundle.mkdir()
    (bundle / MODEL).write_bytes(sequence.model_path.read_bytes())
    np.savez(bundle / EVAL_SET, inputs=np.full((4, 24), 1.5), labels=np.zeros(4, np.int64))
    write_manifest(bundle, sequence.manifest, files=[MODEL, EVAL_SET])
    assert main(["compress", "--bundle", str(bundle), "--output", str(tmp_path / "out")]) == 2
    assert "inputs are float64 but model input 'tokens' is declared INT64" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stored", "datatype", "expected"),
    [
        (np.int32, "INT64", np.int64),
        (np.int64, "INT64", np.int64),
        (np.float64, "FP32", np.float32),
        (np.uint8, "FP32", np.float32),  # pixel values into a float input: exact, as before
    ],
)
def test_eval_rows_are_cast_within_their_kind(stored: type, datatype: str, expected: type) -> None:
    spec = TensorSpec(name="x", datatype=datatype, shape=[-1, 2])  # type: ignore[arg-type]
    assert as_declared(np.ones((3, 2), stored), spec, "eval.npz").dtype == expected


@pytest.mark.parametrize(("stored", "datatype"), [(np.float32, "INT64"), (np.float64, "INT32"), (np.float32, "BYTES")])
def test_eval_rows_are_not_cast_across_kinds(stored: type, datatype: str) -> None:
    spec = TensorSpec(name="x", datatype=datatype, shape=[-1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"eval\.npz: .*model input 'x'"):
        as_declared(np.ones((3, 2), stored), spec, "eval.npz")

