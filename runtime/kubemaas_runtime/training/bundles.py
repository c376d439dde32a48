"""``save_bundle``: rank 0 turns a trained torch model into a model bundle at the output URI.

Bundle: ``model.onnx`` (fp32, dynamic batch, verified against torch with ONNX Runtime),
``model.json`` (signature, labels, metrics, checksums, source), ``eval.npz`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from kubemaas_runtime.bundle import CHECKPOINT, EVAL_SET, MODEL, Manifest, Source, fetch_bytes, write_manifest
from kubemaas_runtime.storage import upload
from kubemaas_runtime.training import progress
from kubemaas_runtime.training.distributed import current
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.export import export_onnx, signature, verify_onnx
from kubemaas_runtime.training.settings import TrainingSettings


@dataclass(frozen=True)
class Artifact:
    """A written bundle as rank 0 reports it (contract 3's ``artifact`` object).

    ``size_bytes``: what a fetch of the bundle writes (``bundle.fetch_bytes``), so the operator
    can size the serving pod's model volume; None when unknown (the key is then left out).
    """

    uri: str
    sha256: str
    metrics: dict[str, float]
    size_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "sha256": self.sha256, "metrics": self.metrics}
        if self.size_bytes is not None:
            out["sizeBytes"] = self.size_bytes
        return out


_saved: list[Artifact] = []


def last_artifact() -> Artifact | None:
    """The artifact written by the latest ``save_bundle`` call in this process."""
    return _saved[-1] if _saved else None


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)
    return inner if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module) else model


def save_bundle(
    model: nn.Module,
    example_input: torch.Tensor,
    eval_set: tuple[np.ndarray, np.ndarray],
    metrics: Mapping[str, float],
    *,
    output: str,
    name: str,
    labels: Sequence[str] = (),
    task: Literal["classification", "regression"] = "classification",
    input_name: str = "input",
    output_name: str = "output",
    checkpoint: Mapping[str, Any] | None = None,
    recipe: str | None = None,
    settings: TrainingSettings | None = None,
    batch_axis: int | None = 0,
    source_fields: Mapping[str, Any] | None = None,
) -> Artifact | None:
    """Write the bundle to ``output`` (rank 0 only; other ranks return None without doing anything).

    ``eval_set`` is ``(inputs, labels)`` as numpy arrays, stored as ``eval.npz`` for accuracy gates.
    ``batch_axis`` is recorded in the manifest as the axis along which rows are independent (0 for
    a model that maps each input row to its own output row, as ``export_onnx`` exports it); pass
    None for a model that mixes rows (a ranker, a set model), so the server never merges requests.
    ``source_fields`` go into the manifest's ``source`` beside the TrainingJob and ``recipe``: the
    recipe's ``hyperparameters`` (so ``checkpoint.pt`` can be loaded into a rebuilt model), how it
    was trained, and a student's lineage.
    Prints the ``done`` event and writes the termination message.
    """
    if not current().is_primary:
        return None
    settings = settings or TrainingSettings()
    model = unwrap(model)
    inputs, targets = np.ascontiguousarray(eval_set[0]), np.ascontiguousarray(eval_set[1])
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise TrainingError(f"eval_set: {len(inputs)} inputs and {len(targets)} labels; need equal, non-zero counts")
    clean = {k: float(v) for k, v in metrics.items()}
    with tempfile.TemporaryDirectory(prefix="kubemaas-bundle-") as tmp:
        directory = Path(tmp)
        export_onnx(model, example_input, directory / MODEL, input_name, output_name)
        clean["onnxMaxAbsDiff"] = verify_onnx(model, directory / MODEL, inputs)
        np.savez(directory / EVAL_SET, inputs=inputs, labels=targets)
        state = dict(checkpoint) if checkpoint is not None else {"model": model.state_dict()}
        torch.save(state, directory / CHECKPOINT)
        ins, outs = signature(directory / MODEL)
        manifest = Manifest(
            name=name,
            task=task,
            inputs=ins,
            outputs=outs,
            labels=list(labels),
            metrics=clean,
            source=_source(settings, recipe, source_fields),
            batchAxis=batch_axis,
        )
        bundle = write_manifest(directory, manifest, files=[MODEL, EVAL_SET, CHECKPOINT])
        size = fetch_bytes(bundle)
        upload(directory, output)
    return publish(Artifact(uri=output, sha256=bundle.digest, metrics=clean, size_bytes=size), settings)


def publish(artifact: Artifact, settings: TrainingSettings) -> Artifact:
    """Report a written bundle: the ``done`` event, the termination message, ``last_artifact()``."""
    _saved.append(artifact)
    progress.emit("done", **artifact.as_dict(), artifact=artifact.as_dict())
    progress.write_termination_message(settings.termination_log, {"artifact": artifact.as_dict()})
    return artifact


def bundle_source(settings: TrainingSettings, recipe: str | None, fields: Mapping[str, Any] | None = None) -> Source:
    """The manifest's lineage: the TrainingJob from the settings, else ``local``; ``fields`` as in ``save_bundle``."""
    return _source(settings, recipe, fields)


def _source(settings: TrainingSettings, recipe: str | None, fields: Mapping[str, Any] | None = None) -> Source:
    extra = dict(fields or {})
    if settings.source_name:
        return Source(
            kind="TrainingJob",
            namespace=settings.source_namespace,
            name=settings.source_name,
            uid=settings.source_uid,
            recipe=recipe,
            **extra,
        )
    return Source(kind="local", recipe=recipe, **extra)
