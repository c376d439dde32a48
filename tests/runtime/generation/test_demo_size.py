"""The demo-size ``textgen`` model (the recipe's defaults) learns: held-out perplexity well below the
unigram baseline. Slow (about a minute on two cores): it trains the real demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemaas_runtime.training.launch import run_local

pytestmark = pytest.mark.slow


def test_the_demo_model_beats_the_unigram_baseline_by_far(tmp_path: Path) -> None:
    done = run_local(1, ["--recipe", "textgen", "--output", str(tmp_path / "lm")], log_dir=tmp_path / "logs",
                     threads_per_rank=2, timeout_s=900)
    metrics = done["artifact"]["metrics"]
    assert metrics["perplexity"] < 0.6 * metrics["unigramPerplexity"], metrics
