"""``kubemaas compress`` on inputs a newcomer gives it: a text-generation bundle by URI without the
perplexity flag, a local ``.tgz`` archive, and a gate that no variant, not even fp32, could meet."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import load_bundle
from kubemaas_runtime.cli import main

pytestmark = pytest.mark.slow


def test_a_text_generation_bundle_by_uri_is_compressed_as_text_generation(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["compress", "--bundle", f"file://{tiny_bundle}", "--output", str(out), "--mode", "auto"]) == 0
    report = json.loads((out / "compression.json").read_text())
    assert {v["name"] for v in report["variants"]} == {"fp32", "int4", "int8"}
    assert load_bundle(out).manifest.task == "text-generation"


def test_a_local_archive_is_fetched_like_a_uri(tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "lm.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_bundle, arcname="lm")  # `tar czf lm.tgz lm/`: one top-level folder
    out = tmp_path / "out"
    assert main(["compress", "--bundle", str(archive), "--output", str(out), "--mode", "int8"]) == 0
    assert load_bundle(out).manifest.variant == "int8"


@pytest.mark.parametrize("gate", ["-0.01", "nan", "inf"])
def test_a_gate_that_is_not_a_fraction_is_refused_by_name(
        gate: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compress", "--bundle", str(tiny_bundle), "--output", str(tmp_path / "o"), "--max-perplexity-increase", gate]
    assert main(argv) == 2
    assert "--max-perplexity-increase (maxPerplexityIncrease) must be a finite fraction >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
