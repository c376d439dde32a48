"""Fixtures for the student tests: tiny teachers trained for real by the recipe loop, in this process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kubemaas_runtime.bundle import Bundle, load_bundle
from kubemaas_runtime.training.config import build_config
from kubemaas_runtime.training.loop import train_recipe
from kubemaas_runtime.training.settings import TrainingSettings
from tests.runtime.training.training_helpers import DIST_VARS

SMALL_SEQUENCE = {
    "d_model": "32", "heads": "4", "layers": "2", "ff": "64", "train_size": "1200", "test_size": "400",
}
"""A sequence teacher that trains in a few seconds on one thread and still reaches ~0.95."""


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingSettings]:
    """One process (no env contract), one thread, the termination message in a temp file."""
    saved = {var: os.environ.pop(var) for var in DIST_VARS if var in os.environ}
    threads = torch.get_num_threads()
    yield TrainingSettings(termination_log=tmp_path_factory.mktemp("term") / "log", threads=1, backend="gloo")
    torch.set_num_threads(threads)
    os.environ.update(saved)


def train(output: Path, settings: TrainingSettings, recipe: str, epochs: int, **params: str) -> Bundle:
    """Train ``recipe`` with the real loop and return its verified bundle."""
    train_recipe(build_config(output=str(output), recipe=recipe, epochs=epochs, params=params), settings)
    return load_bundle(output)


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory, settings: TrainingSettings) -> Bundle:
    """The digits recipe (hidden 256), 6 epochs: ~0.96 top-1."""
    return train(tmp_path_factory.mktemp("digits") / "teacher", settings, "digits", 6)


@pytest.fixture(scope="session")
def sequence_teacher(tmp_path_factory: pytest.TempPathFactory, settings: TrainingSettings) -> Bundle:
    """A small sequence-recipe encoder (2 layers, d_model 32)."""
    return train(tmp_path_factory.mktemp("sequence") / "teacher", settings, "sequence", 6, **SMALL_SEQUENCE)
