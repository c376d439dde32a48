"""Item 0: a recipe bundle records what rebuilds its torch model; other bundles say why they cannot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubemaas_runtime.bundle import MANIFEST, Bundle, load_bundle, write_manifest
from kubemaas_runtime.compression.pipeline import load_eval
from kubemaas_runtime.training.students.teachers import NotRebuildableError, load_teacher
from tests.runtime.compression import models


def test_recipe_bundle_records_every_hyperparameter(sequence_teacher: Bundle) -> None:
    source = sequence_teacher.manifest.source
    assert source is not None
    assert source.recipe == "sequence"
    assert source.hyperparameters == {
        "vocab": 16, "classes": 4, "seq_len": 24, "boost": 2, "d_model": 32, "heads": 4, "layers": 2, "ff": 64,
        "train_size": 1200, "test_size": 400, "data_seed": 1234,
    }  # the defaults included, not only what --set gave
    raw = json.loads((sequence_teacher.path / MANIFEST).read_text())["source"]
    assert raw["training"] == {"epochs": 6, "batchSize": 64, "lr": 0.002, "seed": 0}


def test_rebuilt_teacher_computes_what_its_onnx_export_computes(sequence_teacher: Bundle) -> None:
    teacher = load_teacher(sequence_teacher.path)
    data = load_eval(sequence_teacher)
    session = ort.InferenceSession(str(sequence_teacher.model_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"tokens": data.inputs[:64]})[0]
    with torch.no_grad():
        torch_logits = teacher.model(torch.from_numpy(data.inputs[:64])).numpy()
    np.testing.assert_allclose(torch_logits, onnx_logits, rtol=1e-4, atol=1e-4)


def test_bundle_from_a_uri_cannot_be_rebuilt_and_says_why(tmp_path: Path) -> None:
    bundle = models.tied_bundle(tmp_path / "onnx-only")  # an ONNX file with a manifest, no recipe
    with pytest.raises(NotRebuildableError, match="names no built-in recipe: a model from a uri or from user code"):
        load_teacher(bundle.path)


def test_bundle_without_hyperparameters_cannot_be_rebuilt(tmp_path: Path, digits_teacher: Bundle) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for entry in digits_teacher.manifest.files:
        (old / entry).write_bytes((digits_teacher.path / entry).read_bytes())
    source = digits_teacher.manifest.source
    assert source is not None
    manifest = digits_teacher.manifest.model_copy(update={"source": source.model_copy(update={"hyperparameters": None})})
    write_manifest(old, manifest, files=list(digits_teacher.manifest.files))
    with pytest.raises(NotRebuildableError, match="records recipe 'digits' but not its hyperparameters"):
        load_teacher(load_bundle(old).path)


def test_students_cli_refuses_an_onnx_only_bundle_with_exit_2(tmp_path: Path) -> None:
    bundle = models.tied_bundle(tmp_path / "onnx-only")
    done = subprocess.run(  # a storage URI: fetched and verified first, then refused
        [sys.executable, "-m", "kubemaas_runtime.cli", "students", "--bundle", f"file://{bundle.path}", "--output",
         str(tmp_path / "student"), "--method", "prune"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot prune or distil this model" in done.stderr
    assert not (tmp_path / "student").exists()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_students_cli_refuses_an_output_that_overlaps_the_teacher(
        tmp_path: Path, digits_teacher: Bundle, where: str) -> None:
    """Like ``kubemaas compress``: the student would be written over (or into) its teacher bundle."""
    teacher = Path(shutil.copytree(digits_teacher.path, tmp_path / "teacher"))
    before = {p.name: p.read_bytes() for p in teacher.iterdir() if p.is_file()}
    output = f"file://{teacher}" if where == "same" else str(teacher / "student")
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "students", "--bundle", str(teacher), "--output", output,
         "--method", "prune"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    relation = "the same location as" if where == "same" else "inside"
    assert f"kubemaas students: --output {output!r} is {relation} --bundle {str(teacher)!r}" in done.stderr
    assert {p.name: p.read_bytes() for p in teacher.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in teacher.iterdir()) == sorted(before)
