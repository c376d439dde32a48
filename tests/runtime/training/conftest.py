"""Fixtures for the training tests: real processes, real gloo process groups on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.training.training_helpers import DIST_VARS


@pytest.fixture
def single_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """In-process ``kubemaas train`` as one process (no env contract); yields the termination log path."""
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("KUBEMAAS_TERMINATION_LOG", str(termination))
    monkeypatch.setenv("KUBEMAAS_THREADS", "1")
    monkeypatch.setenv("KUBEMAAS_BACKEND", "gloo")
    return termination
