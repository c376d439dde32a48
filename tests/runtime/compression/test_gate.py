"""A gate that cannot be met, and bad input: clear messages, the right exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from kubemaas_runtime.bundle import EVAL_SET, MANIFEST, MODEL, Bundle, load_bundle, write_manifest
from kubemaas_runtime.cli import main


def test_impossible_gate_fails_listing_every_drop(
    tied: Bundle, tmp_path: Path, termination_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compress", "--bundle", str(tied.path), "--output", str(tmp_path / "out"),
                 "--mode", "int8-dynamic", "--max-accuracy-drop", "0", "--latency-runs", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no variant meets the gate (mode int8-dynamic, max accuracy drop 0.0)" in err
    assert "fp32 drop 0.0000 (passed)" in err
    found = re.search(r"int8-dynamic drop (\d\.\d{4})", err)
    assert found is not None, err
    assert float(found.group(1)) > 0  # measured: the boundary rows flip under int8 weights
    message = json.loads(termination_log.read_text())
    assert message["selected"] is None
    assert message["bundle"] is None
    assert [(v["name"], v["passed"]) for v in message["variants"]] == [("fp32", True), ("int8-dynamic", False)]
    assert not (tmp_path / "out" / MANIFEST).exists()  # nothing servable left behind
    assert (tmp_path / "out" / "compression.json").is_file()


def test_missing_eval_set_is_named(tied: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "no-eval"
    bundle.mkdir()
    shutil.copy(tied.model_path, bundle / MODEL)
    write_manifest(bundle, tied.manifest, files=[MODEL])
    code = main(["compress", "--bundle", str(bundle), "--output", str(tmp_path / "out")])
    assert code == 2
    assert f"{bundle / EVAL_SET}: missing" in capsys.readouterr().err


def test_mismatched_eval_rows_are_named(tied: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bad-eval"
    shutil.copytree(tied.path, bundle)
    np.savez(bundle / EVAL_SET, inputs=np.zeros((4, 64), np.float32), labels=np.zeros(3, np.int64))
    write_manifest(bundle, tied.manifest, files=[MODEL, EVAL_SET])
    assert main(["compress", "--bundle", str(bundle), "--output", str(tmp_path / "out")]) == 2
    assert "inputs has 4 rows and labels 3" in capsys.readouterr().err


def test_negative_gate_is_refused(tied: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compress", "--bundle", str(tied.path), "--output", str(tmp_path / "o"), "--max-accuracy-drop", "-1"])
    assert code == 2
    assert "--max-accuracy-drop (KUBEMAAS_MAX_ACCURACY_DROP) -1.0: Input should be greater than or equal to 0" in (
        capsys.readouterr().err
    )


def test_output_over_the_input_is_refused(tied: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "--bundle", str(tied.path), "--output", str(tied.path)]) == 2
    assert f"is the same location as --bundle {str(tied.path)!r}" in capsys.readouterr().err


def test_uris_go_through_storage(tied: Bundle, tmp_path: Path, termination_log: Path) -> None:
    out_uri = f"file://{tmp_path / 'published'}"
    code = main(["compress", "--bundle", f"file://{tied.path}", "--output", out_uri, "--mode", "none",
                 "--latency-runs", "2"])
    assert code == 0
    published = load_bundle(tmp_path / "published")
    assert published.manifest.variant == "fp32"
    assert (tmp_path / "published" / "variants" / "fp32" / MODEL).is_file()
    fetched = sum((published.path / rel).stat().st_size for rel in ["model.json", *published.manifest.files])
    assert json.loads(termination_log.read_text())["bundle"] == {
        "uri": out_uri, "sha256": published.digest, "sizeBytes": fetched}


def test_eval_rows_that_do_not_fit_the_model_are_named(
    tied: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "wrong-width"
    shutil.copytree(tied.path, bundle)
    np.savez(bundle / EVAL_SET, inputs=np.zeros((4, 7), np.float32), labels=np.zeros(4, np.int64))
    write_manifest(bundle, tied.manifest, files=[MODEL, EVAL_SET])
    assert main(["compress", "--bundle", str(bundle), "--output", str(tmp_path / "out")]) == 2
    assert f"{bundle / EVAL_SET}: inputs of shape [4, 7] do not run through model.onnx" in capsys.readouterr().err
