"""Students enter the same variant table and the same accuracy gate as the quantized variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import Bundle, BundleError, load_bundle
from kubemaas_runtime.compression.pipeline import compress
from kubemaas_runtime.compression.settings import CompressSettings
from kubemaas_runtime.compression.students import parse_methods, parse_student
from kubemaas_runtime.training.settings import TrainingSettings
from kubemaas_runtime.training.students.build import StudentOptions, make_student
from tests.runtime.compression import models

QUANTIZED = ("int8-dynamic", "int8-static", "fp16")


@pytest.fixture(scope="module")
def students(
    tmp_path_factory: pytest.TempPathFactory, digits_teacher: Bundle, settings: TrainingSettings
) -> dict[str, Path]:
    """A fair pruned student and a hopeless distilled one (8 hidden units, one epoch at a tiny rate)."""
    root = tmp_path_factory.mktemp("students")
    make_student(digits_teacher.path, StudentOptions(method="prune", prune_ratio=0.5, epochs=2), str(root / "p"), settings)
    hopeless = StudentOptions(method="distill", sizes={"hidden": "8"}, epochs=1, lr=1e-5)
    make_student(digits_teacher.path, hopeless, str(root / "w"), settings)
    return {"pruned": root / "p", "weak": root / "w"}


def test_students_and_their_quantized_variants_are_measured_and_gated(
    tmp_path: Path, digits_teacher: Bundle, students: dict[str, Path]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "compress", "--bundle", str(digits_teacher.path),
         "--output", str(tmp_path / "out"), "--max-accuracy-drop", "0.03", "--latency-runs", "3",
         "--student", f"pruned={students['pruned']}", "--student", f"weak={students['weak']}"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "compression.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == [
        "fp32", *QUANTIZED, "pruned", *(f"pruned-{q}" for q in QUANTIZED), "weak", *(f"weak-{q}" for q in QUANTIZED),
    ]
    assert report["evalRows"] == 360  # every candidate on the teacher's held-out set
    assert rows["weak"]["accuracyDrop"] > 0.5
    assert [rows[n]["passed"] for n in rows if n.startswith("weak")] == [False] * 4  # the gate refuses it
    assert rows["pruned"]["accuracyDrop"] <= 0.03
    assert rows["pruned"]["passed"] is True
    assert rows["pruned"]["sizeBytes"] < rows["fp32"]["sizeBytes"] / 2
    assert not report["selected"].startswith("weak")
    assert load_bundle(tmp_path / "out").manifest.variant == report["selected"]


def test_a_fixed_mode_builds_only_the_teachers_variants(
    tmp_path: Path, digits_teacher: Bundle, students: dict[str, Path]
) -> None:
    settings = CompressSettings(mode="int8-dynamic", max_accuracy_drop=0.05, latency_runs=2)
    outcome = compress(digits_teacher.path, tmp_path / "out", settings, students={"pruned": students["pruned"]})
    assert [m.name for m in outcome.report.variants] == ["fp32", "int8-dynamic"]
    assert outcome.report.selected == "int8-dynamic"


def test_a_student_with_another_signature_is_refused(
    tmp_path: Path, digits_teacher: Bundle, sequence_teacher: Bundle
) -> None:
    with pytest.raises(BundleError, match=r"student other .* differ from the teacher's"):
        compress(digits_teacher.path, tmp_path / "out", CompressSettings(latency_runs=1),
                 students={"other": sequence_teacher.path})


def test_student_flag_is_name_equals_location() -> None:
    assert parse_student("distilled=s3://models/d") == ("distilled", "s3://models/d")
    with pytest.raises(ValueError, match="expected NAME=LOCATION"):
        parse_student("s3://models/d")
    with pytest.raises(ValueError, match="not a variant name"):
        parse_student("int8-static=/tmp/x")


def test_compress_methods_makes_default_students_in_the_pod(tmp_path: Path, sequence_teacher: Bundle) -> None:
    """``--methods prune,distill`` (no quantize): the training image's one-pod path."""
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "compress", "--bundle", str(sequence_teacher.path),
         "--output", str(tmp_path / "out"), "--max-accuracy-drop", "0.05", "--latency-runs", "3",
         "--methods", "prune,distill"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "KUBEMAAS_THREADS": "1", "KUBEMAAS_TERMINATION_LOG": str(tmp_path / "termination-log")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "compression.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["fp32", "pruned", "distilled"]
    assert report["evalRows"] == 400
    message = json.loads((tmp_path / "termination-log").read_text())
    assert [v["name"] for v in message["variants"]] == ["fp32", "pruned", "distilled"]  # compress's, not a student's


def test_compress_methods_refuses_a_bundle_that_cannot_be_rebuilt(tmp_path: Path) -> None:
    bundle = models.tied_bundle(tmp_path / "onnx-only")
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "compress", "--bundle", str(bundle.path),
         "--output", str(tmp_path / "out"), "--methods", "quantize,distill"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 2
    assert "--methods distill: " in done.stderr
    assert "names no built-in recipe" in done.stderr


def test_methods_flag_names_an_unknown_method() -> None:
    assert parse_methods("quantize, prune") == ["quantize", "prune"]
    with pytest.raises(ValueError, match="--methods 'quantize,sparsify': use a comma-separated subset of quantize"):
        parse_methods("quantize,sparsify")
