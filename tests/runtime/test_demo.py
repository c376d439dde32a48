"""`kubemaas demo`: the real pipeline (2 gloo ranks -> compress -> serve -> v2 requests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubemaas_runtime import demo

pytestmark = pytest.mark.slow


def test_demo_trains_compresses_serves_and_reports(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "demo", "--workdir", str(work),
         "--epochs", "6", "--latency-requests", "20"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[1/4] training 'digits' with 2 torch.distributed ranks" in out
    assert "epoch 6/6" in out
    served = next(line for line in out.splitlines() if line.startswith("held-out accuracy through the server"))
    accuracy = float(served.split(":")[1].split()[0])
    assert accuracy >= 0.93, served
    assert (work / "compressed" / "model.json").is_file()
    assert (work / "compressed" / "compression.json").is_file()
    assert (work / "logs" / "train" / "rank-1.log").is_file()


def test_report_lists_each_variant_and_the_selection() -> None:
    report = {
        "training": {"artifact": {"metrics": {"accuracy": 0.97, "epochs": 3}}},
        "compression": {"selected": "int8-static", "reason": "fastest", "variants": [
            {"name": "fp32", "sizeBytes": 2048, "p50Batch1Ms": 0.1, "p50Batch32Ms": 0.5,
             "accuracy": 0.97, "accuracyDrop": 0.0, "passed": True},
            {"name": "int8-static", "sizeBytes": 1024, "p50Batch1Ms": 0.1, "p50Batch32Ms": 0.3,
             "accuracy": 0.965, "accuracyDrop": 0.005, "passed": True},
        ]},
        "serving": {"name": "digits", "url": "http://127.0.0.1:1/v2/models/digits/infer", "served_accuracy": 0.965,
                    "eval_rows": 360, "samples": [{"label": 7, "predicted": 7}], "p50_ms": 0.9, "p99_ms": 2.0},
        "workdir": "/tmp/x", "seconds": 30.0,
    }
    text = demo.format_report(report)
    assert "| int8-static | 1.0 | 0.100 | 0.300 | 0.9650 | +0.0050 | pass |" in text
    assert "selected: int8-static (fastest)" in text
    assert "training metrics: accuracy=0.9700, epochs=3" in text
