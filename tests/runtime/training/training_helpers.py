"""Helpers shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIST_VARS = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
    "PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK",
)


def rank_done(log_dir: Path, rank: int) -> dict[str, Any]:
    """The ``rank-done`` JSON line a rank logs on stderr (its parameter digest)."""
    for line in (log_dir / f"rank-{rank}.log").read_text().splitlines():
        if line.startswith('{"event": "rank-done"'):
            event: dict[str, Any] = json.loads(line)
            return event
    raise AssertionError(f"rank {rank} logged no rank-done line")


def events_of(stdout: str) -> list[dict[str, Any]]:
    """The JSON event lines of ``kubemaas train``'s stdout."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
