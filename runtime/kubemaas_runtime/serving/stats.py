"""Per-model inference statistics in the shape of Triton's statistics extension
(``GET /v2/models/{name}/stats``; KServe documents the same extension).

Durations are cumulative nanoseconds; ``count`` is how many requests (or, in ``batch_stats``,
ONNX Runtime calls) they add up over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """A count and a cumulative duration (Triton's ``StatisticDuration``)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        """Count one more, lasting ``seconds``."""
        self.count += 1
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        """``{"count", "ns"}``."""
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStats:
    """Counters the data plane updates as requests finish."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    """Rows inferred (Triton counts a batch of 4 as 4 inferences)."""
    execution_count: int = 0
    """ONNX Runtime calls."""
    last_inference_ms: int = 0
    """Milliseconds since the epoch of the last finished request."""
    batches: dict[int, Duration] = field(default_factory=dict)
    """ONNX Runtime calls and their compute time, by rows per call."""

    def succeeded(self, seconds: float, queue_s: float, compute_s: float, rows: int) -> None:
        """One request answered after ``seconds`` in all, ``queue_s`` of them queued; its call
        took ``compute_s`` (Triton charges every request of a batch the batch's time)."""
        self.success.add(seconds)
        self.queue.add(queue_s)
        self.compute_infer.add(compute_s)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def failed(self, seconds: float) -> None:
        """One request that failed after ``seconds``."""
        self.fail.add(seconds)
        self.last_inference_ms = int(time.time() * 1000)

    def executed(self, rows: int, compute_s: float) -> None:
        """One ONNX Runtime call of ``rows`` rows that took ``compute_s`` seconds."""
        self.execution_count += 1
        self.batches.setdefault(rows, Duration()).add(compute_s)

    def codec(self, input_s: float, output_s: float) -> None:
        """Time spent decoding one request and encoding its answer."""
        self.compute_input.add(input_s)
        self.compute_output.add(output_s)

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """One entry of ``model_stats``."""
        zero = Duration().as_dict()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {"batch_size": rows, "compute_input": zero, "compute_infer": d.as_dict(), "compute_output": zero}
                for rows, d in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
