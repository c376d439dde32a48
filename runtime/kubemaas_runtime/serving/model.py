"""The served model: an ONNX Runtime session plus its v2 signature.

A directory with ``model.json`` is a bundle (checksums verified by ``bundle.load_bundle``);
a directory with only ``model.onnx`` is served with the signature read from the graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from kubemaas_runtime.bundle import MANIFEST, MODEL, BundleError, TensorSpec, load_bundle
from kubemaas_runtime.serving.datatypes import V2_TO_NUMPY, v2_from_ort

PLATFORM = "onnx_onnxv1"


@dataclass(frozen=True)
class Tensor:
    """One input or output as the server validates it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 marks a dynamic dimension."""
    dtype: np.dtype[Any] = field(compare=False)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class ServedModel:
    name: str
    version: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    session: ort.InferenceSession
    source: str
    """``bundle`` or ``onnx`` (bare graph)."""
    digest: str | None = None
    input_index: dict[str, Tensor] = field(init=False)
    output_index: dict[str, Tensor] = field(init=False)
    output_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.input_index = {t.name: t for t in self.inputs}
        self.output_index = {t.name: t for t in self.outputs}
        self.output_names = [t.name for t in self.outputs]

    @property
    def batchable(self) -> bool:
        """Requests can be merged when every input and output has a dynamic leading axis."""
        return all(t.shape and t.shape[0] == -1 for t in self.inputs + self.outputs)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Run every output; returns the outputs and the compute time in seconds."""
        start = time.perf_counter()
        values = self.session.run(self.output_names, feeds)
        elapsed = time.perf_counter() - start
        return dict(zip(self.output_names, values, strict=True)), elapsed

    def example_feeds(self) -> dict[str, np.ndarray]:
        """Zeros with every dynamic dimension set to 1 (for the warm-up inference)."""
        feeds: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = tuple(1 if d == -1 else d for d in t.shape)
            feeds[t.name] = np.full(shape, "", dtype=object) if t.datatype == "BYTES" else np.zeros(shape, t.dtype)
        return feeds


def _graph_tensors(args: list[Any], where: str) -> list[Tensor]:
    tensors = []
    for a in args:
        datatype = v2_from_ort(a.type, f"{where} {a.name!r}")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in a.shape)
        tensors.append(Tensor(a.name, datatype, shape, V2_TO_NUMPY[datatype]))
    return tensors


def _check_manifest(declared: list[TensorSpec], graph: list[Tensor], what: str, path: Path) -> list[Tensor]:
    """The manifest names the tensors; the graph is the authority on types. They must agree."""
    by_name = {t.name: t for t in graph}
    if sorted(by_name) != sorted(s.name for s in declared):
        raise BundleError(
            f"{path}: {what} {[s.name for s in declared]} do not match the graph's {list(by_name)}"
        )
    checked = []
    for spec in declared:
        t = by_name[spec.name]
        if spec.datatype != t.datatype:
            raise BundleError(f"{path}: {what} {spec.name!r} is {spec.datatype} but the graph says {t.datatype}")
        if len(spec.shape) != len(t.shape):
            raise BundleError(f"{path}: {what} {spec.name!r} has shape {spec.shape} but the graph has rank {len(t.shape)}")
        shape = tuple(g if g != -1 else d for g, d in zip(t.shape, spec.shape, strict=True))
        checked.append(Tensor(t.name, t.datatype, shape, t.dtype))
    return checked


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the CPU a pod's limit gives the event loop; a served
    # model waits on requests most of the time.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def load_model(
    model_dir: Path, name: str | None = None, *, intra_op_threads: int = 1, inter_op_threads: int = 1
) -> ServedModel:
    """Load a bundle directory, or a directory with a bare model.onnx."""
    model_dir = Path(model_dir)
    onnx_path = model_dir / MODEL
    if not model_dir.is_dir():
        raise BundleError(f"{model_dir}: model directory does not exist")
    bundle = load_bundle(model_dir) if (model_dir / MANIFEST).is_file() else None
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing; the model directory needs {MODEL}")
    try:
        session = ort.InferenceSession(
            str(onnx_path), session_options(intra_op_threads, inter_op_threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types for a bad graph
        raise BundleError(f"{onnx_path}: ONNX Runtime cannot load it: {exc}") from exc
    inputs = _graph_tensors(session.get_inputs(), "input")
    outputs = _graph_tensors(session.get_outputs(), "output")
    if bundle is None:
        return ServedModel(name or model_dir.resolve().name, "1", inputs, outputs, session, "onnx")
    manifest = bundle.manifest
    inputs = _check_manifest(manifest.inputs, inputs, "inputs", model_dir / MANIFEST)
    outputs = _check_manifest(manifest.outputs, outputs, "outputs", model_dir / MANIFEST)
    return ServedModel(
        name or manifest.name, manifest.version, inputs, outputs, session, "bundle", digest=bundle.digest
    )
