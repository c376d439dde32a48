"""The model bundle: the contract between training, compression and serving.

A bundle is a directory::

    model.onnx      fp32 ONNX export with a dynamic batch axis
    model.json      the manifest (this module's ``Manifest``)
    eval.npz        held-out set: arrays ``inputs`` and ``labels`` (no pickles)
    checkpoint.pt   torch state_dict for resume (optional)
    variants/<name>/model.onnx + compression.json   (compression stage)

Every reader validates the manifest and the checksums and fails with a
``BundleError`` that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST = "model.json"
MODEL = "model.onnx"
EVAL_SET = "eval.npz"
CHECKPOINT = "checkpoint.pt"
API_VERSION = "kubemaas.io/v1alpha1"

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


class Source(BaseModel):
    """Where the bundle came from (lineage)."""

    model_config = ConfigDict(extra="allow")

    kind: str = "TrainingJob"
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    recipe: str | None = None


class Manifest(BaseModel):
    """``model.json``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelBundle"] = "ModelBundle"
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    version: str = "1"
    task: Literal["classification", "regression"] = "classification"
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    """Relative file path -> sha256 hex digest, for every file of the bundle but model.json."""
    source: Source | None = None
    variant: str = "fp32"
    """Which compression variant model.onnx is (fp32 for a training bundle)."""

    @field_validator("files")
    @classmethod
    def _safe_paths(cls, files: dict[str, str]) -> dict[str, str]:
        for rel, digest in files.items():
            check_relative(rel)
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"files[{rel!r}]: {digest!r} is not a sha256 hex digest")
        return files

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
    if MODEL not in manifest.files:
        raise BundleError(f"{directory / MANIFEST}: files has no checksum for {MODEL}")
    for rel, expected in sorted(manifest.files.items()):
        path = directory / check_relative(rel)
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual} does not match {MANIFEST} ({expected})")


def load_bundle(directory: Path, *, verify: bool = True) -> Bundle:
    """Read and validate a local bundle directory."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if verify:
        verify_files(directory, manifest)
    return Bundle(path=directory, manifest=manifest, digest=sha256_file(directory / MANIFEST))


def write_manifest(directory: Path, manifest: Manifest, files: list[str] | None = None) -> Bundle:
    """Checksum ``files`` (default: every regular file present except model.json) and write model.json."""
    directory = Path(directory)
    if files is None:
        files = sorted(
            p.relative_to(directory).as_posix()
            for p in directory.rglob("*")
            if p.is_file() and p.name != MANIFEST and "variants" not in p.relative_to(directory).parts
        )
    checksums = {rel: sha256_file(directory / check_relative(rel)) for rel in files}
    final = manifest.model_copy(update={"files": checksums})
    (directory / MANIFEST).write_text(json.dumps(final.dump(), indent=2, sort_keys=True) + "\n")
    return Bundle(path=directory, manifest=final, digest=sha256_file(directory / MANIFEST))
