"""The termination message (contract 3): its shape, its size bound, where it is written."""

from __future__ import annotations

import json
from pathlib import Path

from kubemaas_runtime.compression.measure import Measurement, Quality
from kubemaas_runtime.compression.report import (
    TERMINATION_LIMIT,
    Report,
    encode_termination,
    termination_message,
    write_termination,
)


def _report(variants: int, reason: str = "because") -> Report:
    rows = [
        Measurement(name=f"v{i}", size_bytes=10, p50_batch1_ms=0.1234567891, p95_batch1_ms=0.2, p50_batch32_ms=1.0,
                    p95_batch32_ms=1.5, accuracy=0.97, agreement=0.99, accuracy_drop=0.003, passed=True)
        for i in range(variants)
    ]
    return Report(
        source_bundle="0" * 64, task="classification", mode="auto", max_accuracy_drop=0.01, intra_op_threads=1,
        inter_op_threads=1, latency_runs=5, reduce_range=True, calibration_rows=8, eval_rows=8,
        baseline=Quality(accuracy=0.973), variants=rows, selected="v0", reason=reason,
    )


def test_message_has_the_contract_fields() -> None:
    message = termination_message(_report(1), "s3://b/p", "a" * 64)
    assert message == {
        "selected": "v0",
        "reason": "because",
        "bundle": {"uri": "s3://b/p", "sha256": "a" * 64},
        "variants": [{
            "name": "v0", "sizeBytes": 10, "p50Batch1Ms": 0.123457, "p95Batch1Ms": 0.2, "p50Batch32Ms": 1.0,
            "p95Batch32Ms": 1.5, "accuracy": 0.97, "accuracyDrop": 0.003, "agreement": 0.99, "passed": True,
        }],
    }


def test_message_records_the_bundle_size_when_known() -> None:
    message = termination_message(_report(1), "s3://b/p", "a" * 64, size_bytes=4096)
    assert message["bundle"] == {"uri": "s3://b/p", "sha256": "a" * 64, "sizeBytes": 4096}


def test_message_stays_under_4096_bytes() -> None:
    text = encode_termination(termination_message(_report(40, reason="x" * 5000), "u", "a" * 64))
    assert len(text.encode()) < TERMINATION_LIMIT
    assert json.loads(text)["selected"] == "v0"


def test_not_written_where_the_directory_is_missing(tmp_path: Path) -> None:
    assert write_termination(tmp_path / "absent" / "log", {"selected": None}) is False
    assert write_termination(tmp_path / "log", {"selected": None}) is True
    assert json.loads((tmp_path / "log").read_text()) == {"selected": None}
