"""Errors of the training runtime; each message names the setting or value at fault."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or cannot finish (bad config, unreachable master, bad checkpoint)."""


class MasterUnreachableError(TrainingError):
    """A rank > 0 gave up waiting for the master's TCP port."""


class ExportError(TrainingError):
    """The ONNX export disagrees with the torch model, or cannot be produced."""
