"""``kubemaas bundle DIR`` on a bring-your-own onnxruntime-genai folder (here: the recipe's, manifest removed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import MANIFEST, load_bundle
from kubemaas_runtime.cli import main


def _folder(tiny_bundle: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "My_Model 0.5B"
    shutil.copytree(tiny_bundle, folder)
    (folder / MANIFEST).unlink()
    (folder / "checkpoint.pt").unlink()
    return folder


def test_it_writes_a_verified_manifest_for_every_file(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = _folder(tiny_bundle, tmp_path)
    assert main(["bundle", str(folder)]) == 0
    bundle = load_bundle(folder)
    assert bundle.manifest.name == "my_model-0.5b"
    assert bundle.manifest.task == "text-generation"
    assert set(bundle.manifest.files) == {p.name for p in folder.iterdir()} - {MANIFEST}


def test_a_folder_without_genai_config_is_refused(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tiny_bundle, tmp_path)
    (folder / "genai_config.json").unlink()
    assert main(["bundle", str(folder), "--name", "m"]) == 1
    assert "genai_config.json: missing" in capsys.readouterr().err


def test_a_folder_missing_the_decoders_external_data_is_refused_by_name(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tiny_bundle, tmp_path)
    (folder / "model.onnx.data").unlink()  # the weights: a manifest without them could never be served
    assert main(["bundle", str(folder), "--name", "m"]) == 1
    assert "references external data 'model.onnx.data', which is not in" in capsys.readouterr().err
    assert not (folder / MANIFEST).exists()
