"""Training benchmark: digits recipe throughput with 1 and 2 local ranks (gloo on loopback).

Measured side by side in one run on this machine:

* samples/s: median over epochs 2..N of (global samples / training time of the epoch),
  as reported by rank 0's progress lines (process start, evaluation and checkpoints excluded);
* scaling ratio: 2-rank samples/s over the BEST 1-rank samples/s (1 rank is measured with
  1 thread and with all cores' threads; 2 ranks get half the cores' threads each);
* time to the accuracy bar: training seconds until the first epoch with test accuracy >= 0.95,
  and the wall-clock of the whole run (process start, rendezvous and export included).

Usage: python bench/training.py [--epochs 10] [--repeats 2] [--batch-sizes 64 [256 ...]]
Writes the markdown table to stdout and bench/results/training.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemaas_runtime.training.launch import run_local

BAR = 0.95
RESULTS = Path(__file__).resolve().parent / "results" / "training.md"


@dataclass
class Measurement:
    world: int
    threads: int
    batch: int
    samples_per_s: float
    seconds_to_bar: float | None
    wall_s: float
    accuracy: float


def measure(world: int, threads: int, batch: int, epochs: int) -> Measurement:
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kubemaas-bench-") as tmp:
        argv = ["--recipe", "digits", "--output", f"{tmp}/out", "--epochs", str(epochs), "--batch-size", str(batch)]
        began = time.perf_counter()
        done = run_local(world, argv, on_event=events.append, log_dir=Path(tmp) / "logs", threads_per_rank=threads)
        wall = time.perf_counter() - began
    progress = [e for e in events if e["event"] == "progress"]
    rates = [float(e["samplesPerSecond"]) for e in progress[1:]] or [float(progress[0]["samplesPerSecond"])]
    reached = [float(e["elapsedS"]) for e in progress if float(e["accuracy"]) >= BAR]
    return Measurement(
        world=world,
        threads=threads,
        batch=batch,
        samples_per_s=statistics.median(rates),
        seconds_to_bar=reached[0] if reached else None,
        wall_s=wall,
        accuracy=float(done["artifact"]["metrics"]["accuracy"]),
    )


def median_of(runs: list[Measurement]) -> Measurement:
    bars = [r.seconds_to_bar for r in runs if r.seconds_to_bar is not None]
    return Measurement(
        world=runs[0].world,
        threads=runs[0].threads,
        batch=runs[0].batch,
        samples_per_s=statistics.median(r.samples_per_s for r in runs),
        seconds_to_bar=statistics.median(bars) if len(bars) == len(runs) else None,
        wall_s=statistics.median(r.wall_s for r in runs),
        accuracy=statistics.median(r.accuracy for r in runs),
    )


def table(results: list[Measurement], cores: int, epochs: int, repeats: int, load: tuple[float, float]) -> str:
    lines = [
        f"Digits recipe (MLP 64-256-128-10, Adam, cosine LR), {epochs} epochs, {cores} CPU cores, gloo on loopback; "
        f"median of {repeats} run(s) per row, measured side by side in one run of bench/training.py "
        f"(1-min load average {load[0]:.1f} at start, {load[1]:.1f} at end: other work shared the cores).",
        "",
        "| ranks x threads | global batch | samples/s | vs best 1 rank | s to >= 95% (training) "
        "| wall s (whole run) | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = max((b for b in results if b.batch == r.batch and b.world == 1), key=lambda b: b.samples_per_s)
        bar = f"{r.seconds_to_bar:.2f}" if r.seconds_to_bar is not None else "not reached"
        lines.append(
            f"| {r.world} x {r.threads} | {r.batch} | {r.samples_per_s:,.0f} | {r.samples_per_s / base.samples_per_s:.2f}x "
            f"| {bar} | {r.wall_s:.1f} | {r.accuracy:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    layouts = sorted({(1, 1), (1, cores), (2, max(1, cores // 2))})
    configs = [(world, threads, batch) for batch in args.batch_sizes for world, threads in layouts]
    load_start = os.getloadavg()[0]
    runs: dict[tuple[int, int, int], list[Measurement]] = {c: [] for c in configs}
    for _ in range(args.repeats):  # interleave configurations so machine noise hits them alike
        for world, threads, batch in configs:
            runs[(world, threads, batch)].append(measure(world, threads, batch, args.epochs))
    results = [median_of(runs[c]) for c in configs]
    text = table(results, cores, args.epochs, args.repeats, (load_start, os.getloadavg()[0]))
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Training benchmark\n\n" + text)


if __name__ == "__main__":
    main()
