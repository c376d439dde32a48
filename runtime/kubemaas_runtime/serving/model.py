"""The served model: the ``Model`` protocol the data plane serves, and its ONNX Runtime implementation.

A directory with ``model.json`` is a bundle (checksums verified by ``bundle.load_bundle``);
a directory with only ``model.onnx`` is served with the signature read from the graph.

Requests are merged only along a *declared* batch axis (Triton's ``max_batch_size > 0`` is the
precedent): the manifest's ``batchAxis``, or the ``batch_axis`` serve setting for a bare graph or
a manifest that declares none. Without a declaration every request runs alone, whatever the
shapes look like: a dynamic leading axis may just as well be "the candidates to rank".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

from kubemaas_runtime.bundle import (
    EVAL_SET,
    MANIFEST,
    MODEL,
    BundleError,
    TensorSpec,
    check_external_data,
    load_bundle,
)
from kubemaas_runtime.serving.datatypes import V2_TO_NUMPY, v2_from_ort
from kubemaas_runtime.serving.errors import InferenceFailed, InvalidInput

log = logging.getLogger(__name__)

PLATFORM = "onnx_onnxv1"
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tensor:
    """One input or output as the server validates it."""

    name: str
    datatype: str
    """Open Inference Protocol v2 datatype (``FP32``, ``BYTES``, ...)."""
    shape: tuple[int, ...]
    """-1 marks a dynamic dimension."""
    dtype: np.dtype[Any] = field(compare=False)

    def metadata(self) -> dict[str, Any]:
        """The v2 tensor metadata object ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Signature:
    """A model's inputs and outputs, with lookups by name (in the graph's order)."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    input_index: dict[str, Tensor] = field(init=False)
    output_index: dict[str, Tensor] = field(init=False)
    output_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.input_index = {t.name: t for t in self.inputs}
        self.output_index = {t.name: t for t in self.outputs}
        self.output_names = [t.name for t in self.outputs]


@dataclass(frozen=True)
class Batching:
    """Whether and along which axis requests may be merged, and why (shown in metadata and the log)."""

    axis: int | None
    """The declared batch axis; None means every request runs alone."""
    reason: str


class Model(Protocol):
    """What the data plane serves: a named, versioned function from tensors to tensors.

    The ONNX Runtime tensor model below implements it; another kind of model (a text-generation
    engine, a second runtime) plugs into ``DataPlane`` by implementing the same few members.
    ``run`` is blocking and is only ever called from the data plane's single inference thread.
    """

    name: str
    version: str
    platform: str
    signature: Signature
    batching: Batching

    def run(self, feeds: Feeds) -> tuple[Feeds, float]:
        """Run one (possibly merged) request: outputs by name and the compute time in seconds.

        Raises ``InvalidInput`` (400) when the input was at fault (e.g. an index out of range)
        and ``InferenceFailed`` (500) for anything else."""
        ...

    def warmup_feeds(self) -> list[tuple[str, Feeds]]:
        """Candidate warm-up inputs, best first, each with where it came from (one row each)."""
        ...


@dataclass
class OnnxModel:
    """An ONNX Runtime session plus its v2 signature (implements ``Model``)."""

    name: str
    version: str
    signature: Signature
    session: ort.InferenceSession
    source: str
    """``bundle`` or ``onnx`` (bare graph)."""
    batching: Batching
    digest: str | None = None
    eval_path: Path | None = None
    """The bundle's eval.npz, whose first row warms the model up."""
    platform: str = PLATFORM

    @property
    def inputs(self) -> list[Tensor]:
        """The signature's inputs."""
        return self.signature.inputs

    @property
    def outputs(self) -> list[Tensor]:
        """The signature's outputs."""
        return self.signature.outputs

    def run(self, feeds: Feeds) -> tuple[Feeds, float]:
        """Run every output; see ``Model.run``."""
        names = self.signature.output_names
        start = time.perf_counter()
        try:
            values = self.session.run(names, feeds)
        except (InvalidArgument, Fail) as exc:
            if input_at_fault(exc):
                raise InvalidInput(f"the model rejected the input: {exc}") from None
            raise InferenceFailed(f"inference failed: {exc}") from None
        except Exception as exc:  # ORT raises its own exception types; anything else is ours (500)
            raise InferenceFailed(f"inference failed: {exc}") from None
        elapsed = time.perf_counter() - start
        return dict(zip(names, values, strict=True)), elapsed

    def warmup_feeds(self) -> list[tuple[str, Feeds]]:
        """The first row of eval.npz when the bundle has one that fits, then synthetic rows:
        every dynamic dimension at 1 and then at 16 (zeros; ``"0"`` for BYTES, which a graph
        that parses its strings accepts)."""
        candidates: list[tuple[str, Feeds]] = []
        real = self._eval_row()
        if real is not None:
            candidates.append((EVAL_SET, real))
        for size in (1, 16):
            candidates.append((f"synthetic (dynamic dims = {size})", synthetic_feeds(self.signature.inputs, size)))
        return candidates

    def _eval_row(self) -> Feeds | None:
        if self.eval_path is None or not self.eval_path.is_file():
            return None
        try:
            with np.load(self.eval_path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot read warm-up rows: %s", self.eval_path, exc)
            return None
        specs = self.signature.inputs
        if len(specs) == 1 and "inputs" in arrays:
            arrays = {specs[0].name: arrays["inputs"]}
        feeds: Feeds = {}
        for spec in specs:
            arr = arrays.get(spec.name)
            if arr is None or arr.ndim != len(spec.shape) or len(arr) == 0:
                return None
            row = arr[:1]
            if any(d != -1 and d != r for d, r in zip(spec.shape, row.shape, strict=True)):
                return None
            feeds[spec.name] = row.astype(object) if spec.datatype == "BYTES" else row.astype(spec.dtype)
        return feeds


RESOURCE_WORDS = ("allocate", "memory", "bad_alloc", "cuda", "device")


def input_at_fault(exc: Exception) -> bool:
    """Whether an ONNX Runtime error during a run was caused by the request's input.

    INVALID_ARGUMENT always is (a Gather index out of range). FAIL is when a node's kernel
    rejected what it was given (``... while running Reshape node``: an element count that does
    not divide, shapes that do not broadcast, an index out of range in GatherElements), since the
    input already matched the signature and the same graph ran its warm-up; a FAIL that names an
    allocation or a device is the server's own (500)."""
    if isinstance(exc, InvalidArgument):
        return True
    text = str(exc)
    return "while running" in text and not any(word in text.lower() for word in RESOURCE_WORDS)


ServedModel = OnnxModel
"""The name the rest of the package used before the ``Model`` protocol existed."""


def synthetic_feeds(inputs: list[Tensor], size: int) -> Feeds:
    """Zeros (``"0"`` for BYTES) with every dynamic dimension set to ``size``."""
    feeds: Feeds = {}
    for t in inputs:
        shape = tuple(size if d == -1 else d for d in t.shape)
        feeds[t.name] = np.full(shape, "0", dtype=object) if t.datatype == "BYTES" else np.zeros(shape, t.dtype)
    return feeds


def _graph_tensors(args: list[Any], where: str) -> list[Tensor]:
    tensors = []
    for a in args:
        datatype = v2_from_ort(a.type, f"{where} {a.name!r}")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (a.shape or []))
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
        if t.shape and len(spec.shape) != len(t.shape):
            raise BundleError(f"{path}: {what} {spec.name!r} has shape {spec.shape} but the graph has rank {len(t.shape)}")
        shape = tuple(g if g != -1 else d for g, d in zip(t.shape, spec.shape, strict=True)) if t.shape else tuple(spec.shape)
        checked.append(Tensor(t.name, t.datatype, shape, t.dtype))
    return checked


def check_batch_axis(axis: int, signature: Signature, where: str) -> None:
    """A batch axis must be a dynamic (-1) dimension of every input and of every output whose
    rank is known. Raises ``BundleError`` naming the tensor otherwise."""
    for t, is_output in [(t, False) for t in signature.inputs] + [(t, True) for t in signature.outputs]:
        if is_output and not t.shape:
            continue  # rank unknown to the graph: the run-time row check guards it
        if axis >= len(t.shape) or t.shape[axis] != -1:
            raise BundleError(
                f"{where} {axis}: {t.name!r} has shape {list(t.shape)}; the batch axis must be a dynamic (-1) "
                "dimension of every input and output"
            )


def resolve_batching(declared: int | None, setting: int | None, signature: Signature, bundle: bool) -> Batching:
    """Which axis requests merge along: the manifest's ``batchAxis``, else the ``batch_axis``
    setting, else none. Raises ``BundleError`` when the two disagree or the setting does not fit."""
    if declared is not None:
        if setting is not None and setting != declared:
            raise BundleError(
                f"batch_axis setting {setting} contradicts {MANIFEST} batchAxis {declared}; drop the setting"
            )
        return Batching(declared, f"requests are merged along axis {declared}, declared by {MANIFEST} batchAxis")
    if setting is not None:
        check_batch_axis(setting, signature, "batch_axis setting")
        return Batching(setting, f"requests are merged along axis {setting}, declared by the batch_axis setting")
    where = f"{MANIFEST} declares no batchAxis" if bundle else f"a bare {MODEL} declares no batch axis"
    return Batching(
        None,
        f"requests are not merged: {where} and the batch_axis setting (KUBEMAAS_BATCH_AXIS, --batch-axis) is unset",
    )


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    """Sequential execution, full graph optimization, no spinning threads."""
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
    model_dir: Path,
    name: str | None = None,
    *,
    batch_axis: int | None = None,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
) -> OnnxModel:
    """Load a bundle directory, or a directory with a bare model.onnx.

    ``batch_axis`` is the serve setting (see ``resolve_batching``). Raises ``BundleError`` naming
    the file and the problem when the model cannot be served."""
    model_dir = Path(model_dir)
    onnx_path = model_dir / MODEL
    if not model_dir.is_dir():
        raise BundleError(f"{model_dir}: model directory does not exist")
    bundle = load_bundle(model_dir) if (model_dir / MANIFEST).is_file() else None
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing; the model directory needs {MODEL}")
    if bundle is None:  # nothing to verify, but external data must stay inside the folder
        check_external_data(model_dir, MODEL, None)
    try:
        session = ort.InferenceSession(
            str(onnx_path), session_options(intra_op_threads, inter_op_threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types for a bad graph
        raise BundleError(f"{onnx_path}: ONNX Runtime cannot load it: {exc}") from exc
    inputs = _graph_tensors(session.get_inputs(), "input")
    outputs = _graph_tensors(session.get_outputs(), "output")
    if bundle is None:
        signature = Signature(inputs, outputs)
        batching = resolve_batching(None, batch_axis, signature, bundle=False)
        return OnnxModel(name or model_dir.resolve().name, "1", signature, session, "onnx", batching)
    manifest = bundle.manifest
    signature = Signature(
        _check_manifest(manifest.inputs, inputs, "inputs", model_dir / MANIFEST),
        _check_manifest(manifest.outputs, outputs, "outputs", model_dir / MANIFEST),
    )
    batching = resolve_batching(manifest.batch_axis, batch_axis, signature, bundle=True)
    eval_path = model_dir / EVAL_SET if EVAL_SET in manifest.files else None
    return OnnxModel(
        name or manifest.name, manifest.version, signature, session, "bundle", batching,
        digest=bundle.digest, eval_path=eval_path,
    )
