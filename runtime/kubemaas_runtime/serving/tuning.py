"""The automatic batch-size cap: time ONNX Runtime at a few batch sizes at warm-up, keep the best.

Dynamic batching only pays when one call on N rows costs less than N calls on one row. For a
small MLP a batch of 32 gives several times the rows/s of batch 1; for a transformer encoder
whose batch-1 call is already a large matrix product, it gives nothing on one core, while every
extra row in a batch adds its whole compute time to the latency of the others in that batch
(and, on a closed loop of clients, leaves the core idle while a whole batch's worth of
requests travels back and forth). So the server measures, on the model it serves and on the
core it runs on, rows/s at batch sizes 1, 2, 4, ... up to ``max_batch_size`` and caps batches
at the smallest size within ``tolerance`` of the best rate.

The sizes are timed round-robin (each round runs every size twice in a row: the first run
after another size finds the caches cold, which a server repeating one size would not) and each
size keeps its fastest run, so a neighbour's burst of load slows some runs but does not pick
the size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], tuple[Feeds, float]]

DEFAULT_TOLERANCE = 0.05
"""A bigger batch must beat every smaller one by more than this fraction of rows/s to be chosen."""


@dataclass
class Tuning:
    chosen: int
    rates: dict[int, float]
    """Rows per second by batch size (fastest run of each size)."""
    failed_at: int | None = None
    """The first size ONNX Runtime refused to run, if any (the sizes above it were not timed)."""

    def describe(self) -> str:
        base = self.rates.get(1) or 1.0
        table = ", ".join(f"{n}: {r:.0f} rows/s ({r / base:.2f}x)" for n, r in sorted(self.rates.items()))
        note = f"; batch {self.failed_at} failed to run" if self.failed_at is not None else ""
        return f"max batch size {self.chosen} chosen from measured {table}{note}"


def candidate_sizes(max_rows: int) -> list[int]:
    """1, 2, 4, ... below ``max_rows``, then ``max_rows`` itself."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    sizes = []
    n = 1
    while n < max_rows:
        sizes.append(n)
        n *= 2
    sizes.append(max_rows)
    return sizes


def choose(rates: dict[int, float], tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The smallest batch size whose rows/s is within ``tolerance`` of the best measured."""
    if not rates:
        raise ValueError("no batch size was measured")
    best = max(rates.values())
    return min(n for n, r in rates.items() if r >= best * (1.0 - tolerance))


def repeat_rows(example: Feeds, rows: int) -> Feeds:
    """``example`` (one row per input) repeated to ``rows`` rows along the batch axis."""
    return {name: np.repeat(value, rows, axis=0) for name, value in example.items()}


def measure(
    runner: Runner,
    example: Feeds,
    sizes: list[int],
    *,
    rounds: int = 4,
    budget_s: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[int, float], int | None]:
    """Rows/s of ``runner`` at each size (blocking: call it in the inference thread).

    Every size runs once untimed, then up to ``rounds`` timed rounds of two runs per size (at
    least one round) while the ``budget_s`` lasts. Returns the rates and the first size that raised, if any; sizes at and
    above a failing one are dropped.
    """
    feeds: dict[int, Feeds] = {}
    failed_at: int | None = None
    for n in sizes:
        batch = repeat_rows(example, n)
        try:
            runner(batch)  # untimed: first-call allocations for this shape
        except Exception:  # the model cannot run this many rows; never cap above what ran
            failed_at = n
            break
        feeds[n] = batch
    best: dict[int, float] = {}
    started = clock()
    for done in range(rounds):
        if done and clock() - started > budget_s:
            break
        for n, batch in feeds.items():
            for _ in range(2):  # the first run after another size finds the caches cold
                _, seconds = runner(batch)
                if seconds > 0 and (n not in best or seconds < best[n]):
                    best[n] = seconds
    return {n: n / s for n, s in best.items()}, failed_at


def tune(runner: Runner, example: Feeds, max_rows: int, tolerance: float = DEFAULT_TOLERANCE) -> Tuning:
    """Measure and choose (blocking)."""
    rates, failed_at = measure(runner, example, candidate_sizes(max_rows))
    if not rates:
        return Tuning(1, {}, failed_at)
    return Tuning(choose(rates, tolerance), rates, failed_at)
