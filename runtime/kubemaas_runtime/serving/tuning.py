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
after another size finds the caches cold, which a server repeating one size would not); a
size's rate is the median of its rounds, and the tolerance widens to half the spread measured
between rounds, so a noisy core makes the choice lean to the smaller cap rather than flip
between starts (the same encoder once chose 2 and once 32 when each size kept its single
fastest run).
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
    """What the warm-up measured and chose."""
    chosen: int
    rates: dict[int, float]
    """Rows per second by batch size (fastest run of each size)."""
    failed_at: int | None = None
    """The first size ONNX Runtime refused to run, if any (the sizes above it were not timed)."""
    noise: float = 0.0
    """Largest relative spread of a size's rate across measuring rounds."""

    def describe(self) -> str:
        """One line for the log and the model metadata."""
        base = self.rates.get(1) or 1.0
        table = ", ".join(f"{n}: {r:.0f} rows/s ({r / base:.2f}x)" for n, r in sorted(self.rates.items()))
        note = f"; batch {self.failed_at} failed to run" if self.failed_at is not None else ""
        return f"max batch size {self.chosen} chosen from measured {table} (noise {self.noise:.0%}){note}"


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


def repeat_rows(example: Feeds, rows: int, axis: int = 0) -> Feeds:
    """``example`` (one row per input) repeated to ``rows`` rows along the batch ``axis``."""
    return {name: np.repeat(value, rows, axis=axis) for name, value in example.items()}


def measure(
    runner: Runner,
    example: Feeds,
    sizes: list[int],
    *,
    axis: int = 0,
    rounds: int = 7,
    budget_s: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[int, float], int | None, float]:
    """Rows/s of ``runner`` at each size (blocking: call it in the inference thread).

    Every size runs once untimed, then up to ``rounds`` timed rounds (at least three while the
    ``budget_s`` lasts, at least one in any case); in each round every size runs twice and keeps
    its faster run. A size's rate is the median over the rounds, so a neighbour's burst of load
    in one round moves neither the rate nor the choice. Returns the rates, the first size that
    raised (sizes at and above it are dropped) and the noise: the largest relative spread
    ((max - min) / median) of any size's rates across rounds.
    """
    feeds: dict[int, Feeds] = {}
    failed_at: int | None = None
    for n in sizes:
        batch = repeat_rows(example, n, axis)
        try:
            runner(batch)  # untimed: first-call allocations for this shape
        except Exception:  # the model cannot run this many rows; never cap above what ran
            failed_at = n
            break
        feeds[n] = batch
    per_round: dict[int, list[float]] = {n: [] for n in feeds}
    started = clock()
    for done in range(rounds):
        if done and clock() - started > budget_s:
            break
        for n, batch in feeds.items():
            fastest = min(runner(batch)[1] for _ in range(2))  # the first run after another size finds the caches cold
            if fastest > 0:
                per_round[n].append(n / fastest)
    rates = {n: float(np.median(r)) for n, r in per_round.items() if r}
    noise = max(((max(r) - min(r)) / rates[n] for n, r in per_round.items() if r), default=0.0)
    return rates, failed_at, noise


def tune(
    runner: Runner, example: Feeds, max_rows: int, tolerance: float = DEFAULT_TOLERANCE, axis: int = 0
) -> Tuning:
    """Measure and choose (blocking). The tolerance grows to half the measured noise, so on a
    noisy core a bigger batch must win by more than the noise to be chosen (hysteresis toward
    the smaller, lower-latency cap)."""
    rates, failed_at, noise = measure(runner, example, candidate_sizes(max_rows), axis=axis)
    if not rates:
        return Tuning(1, {}, failed_at, noise)
    return Tuning(choose(rates, max(tolerance, noise / 2)), rates, failed_at, noise)
