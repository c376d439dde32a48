"""The selection policy (pure functions over measurements)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from kubemaas_runtime.compression.measure import Measurement
from kubemaas_runtime.compression.variants import FP32

TIE_TOLERANCE = 0.02
"""p50s within 2% of the fastest count as tied (timing noise); ties go to the smaller file."""
EPSILON = 1e-9


class Selection(BaseModel):
    selected: str | None
    reason: str


def gate(measurements: Sequence[Measurement], max_drop: float) -> list[Measurement]:
    """Copies with ``passed`` set: built, measured, and a drop no larger than ``max_drop``."""
    return [
        m.model_copy(
            update={"passed": m.error is None and m.accuracy_drop is not None and m.accuracy_drop <= max_drop + EPSILON}
        )
        for m in measurements
    ]


def drops(measurements: Sequence[Measurement]) -> str:
    """``fp32 drop 0.0000, int8-dynamic drop 0.0222, fp16 failed: ...`` for messages."""
    parts = []
    for m in measurements:
        if m.error is not None:
            parts.append(f"{m.name} failed: {m.error}")
        else:
            parts.append(f"{m.name} drop {m.accuracy_drop:.4f}" + (" (passed)" if m.passed else ""))
    return ", ".join(parts)


def missed(measurements: Sequence[Measurement], max_drop: float) -> str:
    """``int8-dynamic (drop 0.0222 > 0.0), fp16 (failed: ...)``: the variants that did not pass the gate."""
    parts = []
    for m in measurements:
        if m.passed:
            continue
        if m.error is not None or m.accuracy_drop is None:
            parts.append(f"{m.name} ({m.error or 'not measured'})")
        else:
            parts.append(f"{m.name} (drop {m.accuracy_drop:.4f} > {max_drop})")
    return ", ".join(parts) or "none"


def select(measurements: Sequence[Measurement], mode: str, max_drop: float) -> Selection:
    """``auto``: lowest p50 at batch 32 among passing variants, ties to the smaller file;
    ``none``: fp32; a variant name: that variant. None when the choice fails the gate."""
    passing = [m for m in measurements if m.passed and m.p50_batch32_ms is not None]
    if mode == "auto":
        if not passing:
            return Selection(selected=None, reason=f"no variant within max accuracy drop {max_drop}: {drops(measurements)}")
        fastest = min(m.p50_batch32_ms or 0.0 for m in passing)
        tied = [m for m in passing if (m.p50_batch32_ms or 0.0) <= fastest * (1 + TIE_TOLERANCE)]
        best = min(tied, key=lambda m: (m.size_bytes, m.p50_batch32_ms or 0.0))
        baseline = next((m for m in measurements if m.name == FP32), None)
        versus = (
            f" vs fp32 {baseline.p50_batch32_ms:.3f} ms"
            if baseline and baseline.p50_batch32_ms and best.name != FP32
            else ""
        )
        return Selection(
            selected=best.name,
            reason=(
                f"auto: {best.name} is the fastest at batch 32 (p50 {best.p50_batch32_ms:.3f} ms{versus}; "
                f"ties within {TIE_TOLERANCE:.0%} go to the smaller file, {best.size_bytes} bytes) among "
                f"{len(passing)} of {len(measurements)} variants within max accuracy drop {max_drop} "
                f"(drop {best.accuracy_drop:.4f})"
                + (f"; missed by {missed(measurements, max_drop)}" if len(passing) < len(measurements) else "")
            ),
        )
    wanted = FP32 if mode == "none" else mode
    chosen = next((m for m in measurements if m.name == wanted), None)
    if chosen is None:
        return Selection(selected=None, reason=f"mode {mode}: variant {wanted} was not built")
    if not chosen.passed:
        return Selection(
            selected=None,
            reason=f"mode {mode}: {wanted} does not meet max accuracy drop {max_drop}: {drops(measurements)}",
        )
    return Selection(
        selected=wanted,
        reason=f"mode {mode}: {wanted} is within max accuracy drop {max_drop} (drop {chosen.accuracy_drop:.4f})",
    )
