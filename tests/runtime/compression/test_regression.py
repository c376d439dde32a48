"""Regression bundles are gated on RMSE: the drop is the increase over fp32's RMSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kubemaas_runtime.bundle import MODEL
from kubemaas_runtime.compression.measure import open_session, predict
from kubemaas_runtime.compression.pipeline import compress
from kubemaas_runtime.compression.report import termination_message
from kubemaas_runtime.compression.settings import CompressSettings
from tests.runtime.compression.models import regression_bundle


def test_rmse_drops_are_measured_and_gated(tmp_path: Path) -> None:
    bundle = regression_bundle(tmp_path / "in")
    outcome = compress(bundle.path, tmp_path / "out", CompressSettings(max_accuracy_drop=0.05, latency_runs=2))
    with np.load(bundle.eval_path) as data:
        x, y = data["inputs"], data["labels"]
    fp32_rmse = float(np.sqrt(np.mean((predict(open_session(bundle.model_path), x) - y) ** 2)))
    assert outcome.report.baseline.rmse is not None
    assert abs(outcome.report.baseline.rmse - fp32_rmse) < 1e-6
    for m in outcome.report.variants:
        assert m.accuracy is None
        assert m.agreement is None
        assert m.rmse is not None
        assert m.accuracy_drop is not None
        assert abs(m.accuracy_drop - (m.rmse - fp32_rmse)) < 1e-9
        assert m.passed == (m.accuracy_drop <= 0.05)
    assert outcome.bundle is not None
    served = predict(open_session(outcome.bundle.path / MODEL), x)
    assert float(np.sqrt(np.mean((served - y) ** 2))) <= fp32_rmse + 0.05
    variants = termination_message(outcome.report, "u", outcome.bundle.digest)["variants"]
    assert all("accuracy" not in v and "rmse" in v for v in variants)
