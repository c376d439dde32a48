"""Fixtures for the compression tests: real trained models as bundles, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemaas_runtime.bundle import Bundle
from tests.runtime.compression import models

SMALL_ENCODER = {"layers": 2, "d_model": 64, "heads": 4, "ff": 128, "seq": 16, "train_steps": 40, "eval_rows": 96}


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The digits recipe's bundle from the real ``kubemaas train`` (single process)."""
    return models.train_digits(tmp_path_factory.mktemp("digits") / "bundle")


@pytest.fixture(scope="session")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The sequence recipe (INT64 token ids in) trained small by the real ``kubemaas train`` (issue 11)."""
    return models.train_sequence(tmp_path_factory.mktemp("sequence") / "bundle")


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A transformer-shaped encoder (2 layers, d_model 64) trained on a synthetic task."""
    return models.encoder_bundle(tmp_path_factory.mktemp("encoder") / "bundle", **SMALL_ENCODER)


@pytest.fixture(scope="session")
def tied(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A model whose eval rows sit on a decision boundary: int8 weights must flip some."""
    return models.tied_bundle(tmp_path_factory.mktemp("tied") / "bundle")


@pytest.fixture
def termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBEMAAS_TERMINATION_LOG", str(path))
    return path
