"""The model bundle: the contract between training, compression and serving.

A bundle is a directory::

    model.onnx      fp32 ONNX export with a dynamic batch axis
    model.json      the manifest (this module's ``Manifest``)
    eval.npz        held-out set: arrays ``inputs`` and ``labels`` (no pickles)
    checkpoint.pt   torch state_dict for resume (optional)
    variants/<name>/model.onnx + compression.json   (compression stage)

Every reader validates the manifest and the checksums and fails with a
``BundleError`` that names the file and the problem.

Manifest schema versions (``schemaVersion``; absent means 1):

1. ``files`` maps a relative path to its sha256 hex digest; no batch axis.
2. ``files`` maps a relative path to ``{"sha256": ..., "size": bytes}``, and
   ``batchAxis`` declares the axis along which independent requests may be
   merged (Triton's ``max_batch_size > 0`` is the precedent). Version-1
   manifests are still read; they declare no batch axis, so their models are
   served unmerged.
3. ``task: text-generation``: a decoder-only language model in the folder layout
   onnxruntime-genai loads (``genai_config.json``, tokenizer files, the ONNX
   decoder with its KV cache). It carries ``generation`` (``GenerationSpec``)
   instead of v2 tensor signatures. Tensor bundles are still written as 2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST = "model.json"
MODEL = "model.onnx"
EVAL_SET = "eval.npz"
CHECKPOINT = "checkpoint.pt"
API_VERSION = "kubemaas.io/v1alpha1"
SCHEMA_VERSION = 3
"""The newest manifest schema; every version up to this one is read."""
TENSOR_SCHEMA_VERSION = 2
"""What tensor (classification/regression) bundles are written as."""
GENAI_CONFIG = "genai_config.json"

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]


class BundleError(ValueError):
    """A bundle is missing a file, has a bad manifest, or fails its checksums."""


class TensorSpec(BaseModel):
    """One input or output of the model, in Open Inference Protocol v2 terms."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    datatype: Datatype
    shape: list[int]
    """Dimensions; -1 marks a dynamic one (the batch axis is always dynamic)."""

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        bad = [d for d in shape if d < -1 or d == 0]
        if bad:
            raise ValueError(f"shape {shape} has invalid dimensions {bad}; use -1 for dynamic")
        return shape


class FileEntry(BaseModel):
    """One file of the bundle: its sha256 hex digest and its size in bytes."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int | None = Field(default=None, ge=0)
    """Bytes; None only for files read from a schema-1 manifest."""

    @field_validator("sha256")
    @classmethod
    def _hex(cls, digest: str) -> str:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{digest!r} is not a sha256 hex digest")
        return digest


class GenerationSpec(BaseModel):
    """How to run a text-generation bundle (schema 3); the model itself is described by genai_config.json."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    config: str = GENAI_CONFIG
    """onnxruntime-genai's config file, relative to the bundle."""
    model: str = MODEL
    """The decoder ONNX file (``model.decoder.filename`` in the config)."""
    context_length: int = Field(alias="contextLength", ge=2)
    """Most tokens (prompt + output) one sequence may hold, the KV cache's length."""
    vocab_size: int = Field(alias="vocabSize", ge=2)
    eos_token_ids: list[int] = Field(alias="eosTokenIds", min_length=1)
    """Token ids that end a sequence (finish_reason ``stop``)."""
    chat_template: bool = Field(default=False, alias="chatTemplate")
    """Whether the tokenizer files carry a chat template (needed by /v1/chat/completions)."""
    eval_text: str | None = Field(default=None, alias="evalText")
    """Held-out text (relative path) that perplexity gates are measured on."""


class Source(BaseModel):
    """Where the bundle came from (lineage)."""

    model_config = ConfigDict(extra="allow")

    kind: str = "TrainingJob"
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    recipe: str | None = None
    hyperparameters: dict[str, str | int | float | bool | None] | None = None
    """The recipe's full hyper-parameters (defaults included), so the torch model can be rebuilt
    from ``checkpoint.pt`` for pruning or distillation; None for a uri or user-code model."""


class Manifest(BaseModel):
    """``model.json``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelBundle"] = "ModelBundle"
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schemaVersion", ge=1, le=SCHEMA_VERSION)
    """Manifest schema version; absent in a file means 1 (see the module docstring)."""
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    version: str = "1"
    task: Literal["classification", "regression", "text-generation"] = "classification"
    inputs: list[TensorSpec] = Field(default_factory=list)
    """v2 tensor signature (at least one input and output for tensor tasks; empty for text-generation)."""
    outputs: list[TensorSpec] = Field(default_factory=list)
    generation: GenerationSpec | None = None
    """Text generation only (schema 3)."""
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    """Relative file path -> checksum and size, for every file of the bundle but model.json."""
    batch_axis: int | None = Field(default=None, alias="batchAxis", ge=0)
    """The axis of every input and output along which rows are independent, so that
    requests may be merged along it; None (the default) means requests are never merged."""
    source: Source | None = None
    variant: str = "fp32"
    """Which compression variant model.onnx is (fp32 for a training bundle)."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, raw: Any) -> Any:
        """Read a schema-1 manifest (no ``schemaVersion``; ``files`` maps path -> digest)."""
        if isinstance(raw, dict) and "schemaVersion" not in raw and "schema_version" not in raw:
            raw = {**raw, "schemaVersion": 1}
            files = raw.get("files")
            if isinstance(files, dict):
                raw["files"] = {k: {"sha256": v} if isinstance(v, str) else v for k, v in files.items()}
        return raw

    @field_validator("files")
    @classmethod
    def _safe_paths(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for rel in files:
            check_relative(rel)
        return files

    @model_validator(mode="after")
    def _task_shape(self) -> Manifest:
        if self.task == "text-generation":
            if self.generation is None or self.schema_version < 3:
                raise ValueError(
                    f"task text-generation needs schemaVersion >= 3 and a generation section "
                    f"(got schemaVersion {self.schema_version}, generation {self.generation})"
                )
        elif not self.inputs or not self.outputs:
            raise ValueError(f"task {self.task}: inputs and outputs need at least one tensor each")
        return self

    @property
    def model_file(self) -> str:
        """The ONNX file a server loads: model.onnx, or the decoder named by the generation spec."""
        return self.generation.model if self.generation is not None else MODEL

    @model_validator(mode="after")
    def _batch_axis_is_dynamic(self) -> Manifest:
        axis = self.batch_axis
        if axis is None:
            return self
        for spec in [*self.inputs, *self.outputs]:
            if axis >= len(spec.shape) or spec.shape[axis] != -1:
                raise ValueError(
                    f"batchAxis {axis}: {spec.name!r} has shape {spec.shape}; the batch axis must be a "
                    "dynamic (-1) dimension of every input and output"
                )
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Bundle(BaseModel):
    """A validated bundle on local disk."""

    model_config = ConfigDict(frozen=True)

    path: Path
    manifest: Manifest
    digest: str
    """sha256 of model.json; it covers every file through the manifest's checksums."""

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_SET


def check_relative(rel: str) -> PurePosixPath:
    """Refuse absolute paths and ``..`` so a manifest or archive cannot escape its directory."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise BundleError(f"unsafe path {rel!r}: must be relative and stay inside the bundle")
    return p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing; a bundle needs {MANIFEST} beside {MODEL}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Check every checksum in the manifest; the model file must be listed."""
    required = [MODEL] if manifest.generation is None else [manifest.generation.model, manifest.generation.config]
    for rel in required:
        if rel not in manifest.files:
            raise BundleError(f"{directory / MANIFEST}: files has no checksum for {rel}")
    for rel, entry in sorted(manifest.files.items()):
        path = directory / check_relative(rel)
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        size = path.stat().st_size
        if entry.size is not None and size != entry.size:
            raise BundleError(f"{path}: {size} bytes, but {MANIFEST} records {entry.size}")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise BundleError(f"{path}: sha256 {actual} does not match {MANIFEST} ({entry.sha256})")


def _mentions(path: Path, needle: bytes) -> bool:
    """Whether the bytes ``needle`` occur in the file (streamed, so a 2 GB file costs no memory)."""
    tail = b""
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1) :]
    return False


def external_data_locations(model_path: Path) -> list[str]:
    """The ``location`` of every tensor of the ONNX file ``model_path`` stored outside it, as written.

    Locations are relative to the model file's folder (the ONNX external-data spec). No weights
    are read: a file without the bytes ``location`` holds no external-data reference and is not
    parsed; otherwise it is parsed with ``onnx.load(load_external_data=False)``. Initializers,
    sparse initializers, tensor attributes (Constant), subgraphs (If/Loop/Scan) and local
    functions are walked, as ``onnx.external_data_helper._get_all_tensors`` does (that walker is
    private). A file onnx cannot parse yields [] (ONNX Runtime then refuses it with its own error).
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if not _mentions(model_path, b"location"):
        return []
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # protobuf's DecodeError (untyped) and onnx's own parse errors
        return []

    def graph_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
        found = [*graph.initializer]
        for sparse in graph.sparse_initializer:
            found += [sparse.values, sparse.indices]
        return found + node_tensors(graph.node)

    def node_tensors(nodes: Any) -> list[onnx.TensorProto]:
        found: list[onnx.TensorProto] = []
        for node in nodes:
            for attr in node.attribute:
                found += [attr.t, *attr.tensors, attr.sparse_tensor.values, attr.sparse_tensor.indices]
                for sparse in attr.sparse_tensors:
                    found += [sparse.values, sparse.indices]
                for sub in [attr.g, *attr.graphs]:
                    found += graph_tensors(sub)
        return found

    tensors = graph_tensors(model.graph)
    for function in model.functions:
        tensors += node_tensors(function.node)
    return sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})


def check_external_data(directory: Path, model_file: str, manifest: Manifest | None) -> list[str]:
    """Refuse external data the bundle cannot vouch for; return the referenced files, bundle-relative.

    ``directory``: the bundle (or bare model) folder; ``model_file``: the ONNX file ONNX Runtime
    will open, relative to it. With a ``manifest``, every referenced file must be listed in
    ``files`` (``verify_files`` then checks its size and sha256). Without one (a bare model.onnx
    folder, nothing to verify), every referenced file must lie inside ``directory`` once symlinks
    are resolved. Either way absolute and ``..`` locations are refused. Raises ``BundleError``
    naming the model file and the referenced file.
    """
    directory = Path(directory)
    model_path = directory / model_file
    folder = PurePosixPath(model_file).parent
    referenced: list[str] = []
    for location in external_data_locations(model_path):
        try:
            rel = (folder / check_relative(location)).as_posix()
        except BundleError as exc:
            raise BundleError(f"{model_path}: external data location refused: {exc}") from exc
        if manifest is not None and rel not in manifest.files:
            raise BundleError(
                f"{model_path}: references external data {rel!r}, which {MANIFEST} does not list, so its "
                f"checksum cannot be verified; refused (list it under files with its sha256 and size)"
            )
        if manifest is None:
            resolved = (directory / rel).resolve()
            if not resolved.is_relative_to(directory.resolve()):
                raise BundleError(
                    f"{model_path}: external data {rel!r} resolves to {resolved}, outside {directory}; refused"
                )
        referenced.append(rel)
    return referenced


def load_bundle(directory: Path, *, verify: bool = True) -> Bundle:
    """Read and validate a local bundle directory.

    With ``verify``: every listed file's size and sha256 (``verify_files``), and every
    external-data file the model references is listed (``check_external_data``), before any
    ONNX Runtime session opens the model. Raises ``BundleError``.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if verify:
        verify_files(directory, manifest)
        check_external_data(directory, manifest.model_file, manifest)
    return Bundle(path=directory, manifest=manifest, digest=sha256_file(directory / MANIFEST))


def fetch_bytes(bundle: Bundle) -> int:
    """Bytes a ``kubemaas fetch`` of ``bundle`` writes: ``model.json`` plus every file it lists.

    Sizes come from the manifest (schema 2 and later), else from the files on disk (schema 1).
    The operator derives the serving pod's model-volume ``sizeLimit`` from this number.
    Raises OSError when an unsized listed file is missing.
    """
    listed = sum(
        entry.size if entry.size is not None else (bundle.path / check_relative(rel)).stat().st_size
        for rel, entry in bundle.manifest.files.items()
    )
    return listed + (bundle.path / MANIFEST).stat().st_size


def write_manifest(directory: Path, manifest: Manifest, files: list[str] | None = None) -> Bundle:
    """Checksum ``files`` (default: every regular file present except model.json) and write model.json."""
    directory = Path(directory)
    if files is None:
        files = sorted(
            p.relative_to(directory).as_posix()
            for p in directory.rglob("*")
            if p.is_file() and p.name != MANIFEST and "variants" not in p.relative_to(directory).parts
        )
    checksums = {
        rel: FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        for rel in files
        for path in [directory / check_relative(rel)]
    }
    version = SCHEMA_VERSION if manifest.task == "text-generation" else TENSOR_SCHEMA_VERSION
    final = manifest.model_copy(update={"files": checksums, "schema_version": version})
    (directory / MANIFEST).write_text(json.dumps(final.dump(), indent=2, sort_keys=True) + "\n")
    return Bundle(path=directory, manifest=final, digest=sha256_file(directory / MANIFEST))
