"""The selection policy and the gate, as pure functions."""

from __future__ import annotations

from kubemaas_runtime.compression.measure import Measurement
from kubemaas_runtime.compression.select import gate, select


def _m(name: str, p50: float, drop: float, size: int = 100, error: str | None = None) -> Measurement:
    return Measurement(name=name, size_bytes=size, p50_batch32_ms=p50, accuracy_drop=drop, error=error)


TABLE = [_m("fp32", 10.0, 0.0, 400), _m("int8-dynamic", 5.0, 0.02, 100), _m("int8-static", 6.0, 0.005, 110)]


def test_gate_passes_drops_up_to_the_limit_and_never_errors() -> None:
    rows = [*TABLE, _m("fp16", 1.0, 0.0, error="build failed: boom")]
    assert [m.passed for m in gate(rows, 0.005)] == [True, False, True, False]


def test_auto_picks_the_fastest_within_the_gate() -> None:
    chosen = select(gate(TABLE, 0.01), "auto", 0.01)
    assert chosen.selected == "int8-static"  # int8-dynamic (5.0 ms) is faster but drops 0.02 > 0.01
    assert "int8-static is the fastest at batch 32" in chosen.reason


def test_auto_ties_go_to_the_smaller_file() -> None:
    rows = [_m("int8-static", 6.0, 0.0, 110), _m("int8-dynamic", 6.05, 0.0, 100)]  # 6.05 / 6.0 < 1.02
    assert select(gate(rows, 0.01), "auto", 0.01).selected == "int8-dynamic"


def test_a_named_mode_that_fails_the_gate_selects_nothing_and_lists_drops() -> None:
    chosen = select(gate(TABLE, 0.01), "int8-dynamic", 0.01)
    assert chosen.selected is None
    assert "fp32 drop 0.0000 (passed), int8-dynamic drop 0.0200, int8-static drop 0.0050 (passed)" in chosen.reason


def test_mode_none_ships_fp32() -> None:
    assert select(gate(TABLE, 0.0), "none", 0.0).selected == "fp32"
