"""How a training run reports (documented choice, contract 3):

* rank 0 prints one JSON object per line on **stdout**: ``{"event": "progress", "epoch", "epochs",
  "step", "loss", "accuracy", ...}`` per epoch, ``{"event": "resume", ...}`` after a restart and a
  final ``{"event": "done", "artifact": {...}}``; the operator (or ``kubectl logs``) reads them;
* every rank logs human-readable lines on **stderr** (and ``{"event": "rank-done"}``);
* rank 0 writes the final result as the pod's **termination message** (``artifact`` on success,
  ``error`` on failure), which the operator reads from the pod status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kubemaas_runtime import termination

TERMINATION_LIMIT = 4096


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=False) + "\n")
    sys.stdout.flush()


def log_json(event: str, **fields: Any) -> None:
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def write_termination_message(path: Path, message: dict[str, Any]) -> bool:
    """Write ``message`` as JSON if ``path`` can be written (`termination.can_write`); keep it < 4096 bytes."""
    if not termination.can_write(path):
        return False
    text = json.dumps(message, separators=(",", ":"))
    if len(text.encode()) >= TERMINATION_LIMIT:
        text = _shrink(message)
    try:
        path.write_text(text)
    except OSError:
        return False
    return True


def _shrink(message: dict[str, Any]) -> str:
    """Drop metrics beyond accuracy/loss, then truncate an error, so the message fits."""
    slim = json.loads(json.dumps(message))
    artifact = slim.get("artifact")
    if isinstance(artifact, dict) and isinstance(artifact.get("metrics"), dict):
        artifact["metrics"] = {k: v for k, v in artifact["metrics"].items() if k in ("accuracy", "loss")}
    text = json.dumps(slim, separators=(",", ":"))
    if len(text.encode()) >= TERMINATION_LIMIT and isinstance(slim.get("error"), str):
        slim["error"] = slim["error"][: TERMINATION_LIMIT // 2] + " ...(truncated)"
        text = json.dumps(slim, separators=(",", ":"))
    return text
