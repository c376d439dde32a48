"""Compression reports with many variants and long names, for the termination-message tests."""

from __future__ import annotations

from kubemaas_runtime.compression.measure import Measurement, Quality
from kubemaas_runtime.compression.report import Report

BUNDLE = "pvc://models/" + "nested/" * 20 + "digits-compressed"


def long_name(i: int, length: int) -> str:
    """A unique variant name ``length`` characters long (students are named by their users)."""
    return (f"student-{i:03d}-" + "distilled-int8-static-" * (length // 22 + 1))[:length]


def tensor_report(count: int, name_length: int, selected: int | None, *, any_passed: bool = True) -> Report:
    """``count`` variants; even ones pass the gate (drop i/10000), odd ones fail (drop 0.02 + i/10000);
    with ``any_passed=False`` all fail (drop 0.02 + i/10000)."""
    rows = [
        Measurement(name=long_name(i, name_length), size_bytes=1000 + i, p50_batch1_ms=0.1 + i, p95_batch1_ms=0.2 + i,
                    p50_batch32_ms=1.0 + i, p95_batch32_ms=1.5 + i, accuracy=0.97, agreement=0.99,
                    accuracy_drop=i / 10000 if any_passed and i % 2 == 0 else 0.02 + i / 10000,
                    passed=any_passed and i % 2 == 0)
        for i in range(count)
    ]
    return Report(
        source_bundle="0" * 64, task="classification", mode="auto", max_accuracy_drop=0.01, intra_op_threads=1,
        inter_op_threads=1, latency_runs=5, reduce_range=True, calibration_rows=8, eval_rows=8,
        baseline=Quality(accuracy=0.973), variants=rows, selected=None if selected is None else rows[selected].name,
        reason="auto: fastest within the gate " + "because " * 100,
    )
