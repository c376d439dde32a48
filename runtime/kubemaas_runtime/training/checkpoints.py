"""Per-epoch ``checkpoint.pt`` in the output location, and resume from it after a restart.

Rank 0 writes (state dicts, epoch and step only); on start rank 0 reads the newest one from the
output location and broadcasts its bytes, so ranks need no shared filesystem and nothing is
unpickled: every rank parses it with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from kubemaas_runtime.bundle import CHECKPOINT
from kubemaas_runtime.storage import NotFoundError, Store
from kubemaas_runtime.training.distributed import DistInfo, broadcast_bytes, load_bytes
from kubemaas_runtime.training.errors import TrainingError

FORMAT = 1


def save_checkpoint(store: Store, state: dict[str, Any]) -> None:
    """Write ``state`` to ``<output>/checkpoint.pt`` (replacing the previous epoch's)."""
    with tempfile.TemporaryDirectory(prefix="kubemaas-ckpt-") as tmp:
        path = Path(tmp) / CHECKPOINT
        torch.save({"format": FORMAT, **state}, path)
        store.put(path, CHECKPOINT)


def read_checkpoint_bytes(store: Store) -> bytes | None:
    with tempfile.TemporaryDirectory(prefix="kubemaas-ckpt-") as tmp:
        path = Path(tmp) / CHECKPOINT
        try:
            store.get(CHECKPOINT, path)
        except NotFoundError:
            return None
        return path.read_bytes()


def load_checkpoint(store: Store, info: DistInfo) -> dict[str, Any] | None:
    """The output location's checkpoint on every rank, or None when there is none yet."""
    data = read_checkpoint_bytes(store) if info.is_primary else None
    data = broadcast_bytes(data, info)
    if data is None:
        return None
    try:
        state = load_bytes(data)
    except Exception as exc:
        raise TrainingError(f"{store.uri}/{CHECKPOINT}: unreadable checkpoint: {exc}") from exc
    for key in ("epoch", "step", "model", "optimizer"):
        if key not in state:
            raise TrainingError(f"{store.uri}/{CHECKPOINT}: checkpoint has no {key!r} entry")
    return dict(state)

