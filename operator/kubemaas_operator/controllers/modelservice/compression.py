"""The compression Job of a ModelService and the report its pod leaves (contract 3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.kube import manifests as common
from kubemaas_operator.settings import OperatorSettings
from kubemaas_runtime import contracts
from kubemaas_runtime.contracts import CompressionEnv, StorageEnv

COMPONENT = "compressor"
CONTAINER = "compress"
ANNOTATION_SOURCE_URI = f"{common.GROUP}/source-uri"
ANNOTATION_SOURCE_SHA = f"{common.GROUP}/source-sha256"


class Variant(BaseModel):
    """One measured variant (camelCase as in the termination message and the status)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    size_bytes: int | None = Field(default=None, alias="sizeBytes")
    p50_batch1_ms: float | None = Field(default=None, alias="p50Batch1Ms")
    p95_batch1_ms: float | None = Field(default=None, alias="p95Batch1Ms")
    p50_batch32_ms: float | None = Field(default=None, alias="p50Batch32Ms")
    p95_batch32_ms: float | None = Field(default=None, alias="p95Batch32Ms")
    accuracy: float | None = None
    accuracy_drop: float | None = Field(default=None, alias="accuracyDrop")
    agreement: float | None = None
    rmse: float | None = None
    perplexity: float | None = None
    """Text generation: held-out perplexity of this variant."""
    perplexity_increase: float | None = Field(default=None, alias="perplexityIncrease")
    """Text generation: perplexity / fp32 perplexity - 1 (the gate's measure)."""
    tokens_per_second: float | None = Field(default=None, alias="tokensPerSecond")
    """Text generation: greedy decode tokens/s at batch 1."""
    ttft_ms: float | None = Field(default=None, alias="ttftMs")
    """Text generation: time to first token of a fixed prompt, in ms."""
    passed: bool = False

    @property
    def generative(self) -> bool:
        """Measured as text generation (perplexity), not on eval.npz (accuracy)."""
        return self.perplexity_increase is not None


class BundleRef(BaseModel):
    """The compressed bundle the report points at (uri, sha256 and, from newer runtimes, the bytes
    a fetch of it writes)."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    uri: str
    sha256: str
    size_bytes: int | None = Field(default=None, alias="sizeBytes", ge=0)


class Report(BaseModel):
    """The JSON ``kubemaas compress`` writes to its termination log."""

    model_config = ConfigDict(extra="ignore")

    selected: str | None = None
    reason: str = ""
    bundle: BundleRef | None = None
    variants: list[Variant] = Field(default_factory=list)

    def variant(self, name: str | None) -> Variant | None:
        """The measured variant called ``name``, or None."""
        return next((v for v in self.variants if v.name == name), None)

    def status(self) -> dict[str, Any]:
        """The part of status.compression that comes from the report."""
        return {
            "selected": self.selected,
            "reason": self.reason,
            "bundle": self.bundle.model_dump(by_alias=True, exclude_none=True) if self.bundle else None,
            "variants": [v.model_dump(by_alias=True, exclude_none=True) for v in self.variants],
        }

    @property
    def omitted_note(self) -> str:
        """``[3 of 40 variants left out of this message; ...]`` when the pod's termination message
        had to leave variants out (``contracts.omitted_variants_note``), else ''.
        Read from ``reason``, so a report rebuilt from status.compression says it too."""
        if not self.reason.endswith(contracts.OMITTED_VARIANTS_END):
            return ""
        return self.reason[self.reason.rfind("["):]

    @property
    def generative(self) -> bool:
        """A text-generation report (its variants are gated on perplexity)."""
        return any(v.generative for v in self.variants)

    def drops(self) -> str:
        """``int8-dynamic drop 0.0312 (failed), fp16 drop 0.0001 (passed)`` for messages
        (``int4 perplexity +7.30% (failed)`` for text generation)."""
        parts = []
        for v in self.variants:
            if v.generative:
                parts.append(f"{v.name} perplexity {100 * (v.perplexity_increase or 0.0):+.2f}% "
                             f"({'passed' if v.passed else 'failed'})")
                continue
            drop = "n/a" if v.accuracy_drop is None else f"{v.accuracy_drop:.4f}"
            parts.append(f"{v.name} drop {drop} ({'passed' if v.passed else 'failed'})")
        return ", ".join(parts)


    def gate_reason(self, max_drop: float, max_increase: float | None = None) -> str:
        """The short REASON of a failed gate: ``AccuracyGateFailed: best drop 4.2pt (fp16) > 1pt``,
        or for text generation ``AccuracyGateFailed: best perplexity +7.3% (int8) > +5%``."""
        if self.generative:
            gate = contracts.DEFAULT_MAX_PERPLEXITY_INCREASE if max_increase is None else max_increase
            measured = [v for v in self.variants if v.generative]
            # the variants the gate refused (fp32 is the reference and always within it)
            best = min([v for v in measured if not v.passed] or measured, key=lambda v: v.perplexity_increase or 0.0)
            return (f"{GATE_FAILED}: best perplexity {percent(best.perplexity_increase or 0.0)} ({best.name}) "
                    f"> {percent(gate)}")
        measured = [v for v in self.variants if v.accuracy_drop is not None]
        if not measured:
            return f"{GATE_FAILED}: no variant measured within {points(max_drop)}"
        best = min(measured, key=lambda v: v.accuracy_drop if v.accuracy_drop is not None else 0.0)
        return f"{GATE_FAILED}: best drop {points(best.accuracy_drop or 0.0)} ({best.name}) > {points(max_drop)}"


GATE_FAILED = "AccuracyGateFailed"


def points(fraction: float) -> str:
    """An accuracy fraction in percentage points: 0.042 -> ``4.2pt``, 0.01 -> ``1pt``."""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "pt"


def percent(fraction: float) -> str:
    """A relative increase in percent: 0.073 -> ``+7.3%``, 0.05 -> ``+5%``."""
    return f"{fraction * 100:+.2f}".rstrip("0").rstrip(".") + "%"


def gate_reason(comp_status: Mapping[str, Any]) -> str:
    """``Report.gate_reason`` of a status.compression (variants, maxAccuracyDrop, maxPerplexityIncrease)."""
    report = Report.model_validate({"variants": comp_status.get("variants") or []})
    increase = comp_status.get("maxPerplexityIncrease")
    return report.gate_reason(float(comp_status.get("maxAccuracyDrop") or 0.0),
                              None if increase is None else float(increase))


class ReportError(ValueError):
    """A termination message that is not a compression report."""


def parse_report(message: str) -> Report:
    """The compression report in a termination message; raises ReportError naming what is wrong."""
    try:
        raw = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ReportError(f"termination message is not JSON: {exc}: {message[:200]!r}") from exc
    try:
        return Report.model_validate(raw)
    except ValidationError as exc:
        raise ReportError(f"termination message is not a compression report: {exc.errors()[0]['msg']}") from exc


def digest(source_sha256: str, spec: ModelServiceSpec, text_generation: bool = False) -> str:
    """8 hex chars over the source bundle checksum and the compression spec.

    Fields at their defaults stay out of the hash, so a Job named before they existed keeps its name.
    """
    comp = spec.compression
    key: dict[str, Any] = {"sha256": source_sha256, "mode": comp.mode, "maxAccuracyDrop": comp.max_accuracy_drop}
    if comp.methods != contracts.DEFAULT_COMPRESSION_METHODS:
        key["methods"] = list(comp.methods)
    gate = perplexity_gate(spec, text_generation)
    if gate is not None:
        key["maxPerplexityIncrease"] = gate
    return common.stable_hash(key, 8)


def perplexity_gate(spec: ModelServiceSpec, text_generation: bool) -> float | None:
    """The ``--max-perplexity-increase`` to pass: the spec's, or the default for a bundle known to be
    text generation (a TrainingJob of the textgen recipe); None for a tensor bundle or an unknown one.

    The flag is what makes ``kubemaas compress`` treat a remote bundle as text generation before it
    fetches it (``kubemaas_runtime.compression.textgen.maybe_run``).
    """
    increase = spec.compression.max_perplexity_increase
    if increase is None and text_generation:
        return contracts.DEFAULT_MAX_PERPLEXITY_INCREASE
    return increase


def image(spec: ModelServiceSpec, settings: OperatorSettings) -> str:
    """The compression pod's image: the training image when students are made (prune, distill need
    torch), else the serving runtime's (``spec.runtime.image`` or the operator's serving image)."""
    if spec.compression.students:
        return settings.training_image
    return spec.runtime.image or settings.serving_image


def job_name(msvc: str, source_sha256: str, spec: ModelServiceSpec, text_generation: bool = False) -> str:
    """Deterministic ``<msvc>-compress-<digest8>``, at most 63 characters."""
    return common.child_name(msvc, f"compress-{digest(source_sha256, spec, text_generation)}")


def output_uri(store: str, namespace: str, msvc: str, source_sha256: str, spec: ModelServiceSpec,
               text_generation: bool = False) -> str:
    """Where the compression Job writes its bundle: ``<store>/<namespace>/<msvc>/<digest8>``."""
    return f"{store.rstrip('/')}/{namespace}/{msvc}/{digest(source_sha256, spec, text_generation)}"


def compress_args(source_uri: str, out: str, spec: ModelServiceSpec, text_generation: bool = False) -> list[str]:
    """``kubemaas compress`` arguments; ``--methods`` only when not the default (quantize), and
    ``--max-perplexity-increase`` for a text-generation bundle or when the spec sets it."""
    comp = spec.compression
    args = ["compress", "--bundle", source_uri, "--output", out, "--mode", comp.mode,
            "--max-accuracy-drop", repr(comp.max_accuracy_drop)]
    if comp.methods != contracts.DEFAULT_COMPRESSION_METHODS:
        args += ["--methods", ",".join(comp.methods)]
    gate = perplexity_gate(spec, text_generation)
    if gate is not None:
        args += ["--max-perplexity-increase", repr(gate)]
    return args


def job(
    owner: Mapping[str, Any],
    spec: ModelServiceSpec,
    source_uri: str,
    source_sha256: str,
    settings: OperatorSettings,
    text_generation: bool = False,
) -> dict[str, Any]:
    """The compression Job: fetch, build every variant (and students), measure, select, upload, report.

    ``text_generation``: the source is known to be a text-generation bundle (perplexity gate).
    """
    meta = owner["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    out = output_uri(settings.model_store_uri, namespace, name, source_sha256, spec, text_generation)
    pod_labels = common.labels(COMPONENT, name, **{common.LABEL_MODELSERVICE: name})
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    claims: dict[str, bool] = {}
    out_claim, in_claim = common.pvc_claim(out), common.pvc_claim(source_uri)
    if in_claim:
        claims[in_claim] = True
    if out_claim:
        claims[out_claim] = False
    for claim, read_only in claims.items():
        volume, mount = common.pvc_volume(claim, settings.pvc_root, read_only=read_only)
        volumes.append(volume)
        mounts.append(mount)
    # One set of credentials reads the source and writes the store: the ModelService's own
    # secret when it names one (then it must reach both), else the operator's.
    secret, optional = common.effective_storage_secret(spec.model.storage_secret_name, settings.storage_secret_name)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubemaas"],
        "args": compress_args(source_uri, out, spec, text_generation),
        "env": [
            {"name": StorageEnv.PVC_ROOT, "value": settings.pvc_root},
            {"name": CompressionEnv.TERMINATION_LOG, "value": contracts.TERMINATION_LOG},
            {"name": CompressionEnv.INTRA_OP_THREADS, "value": str(spec.runtime.threads)},
            {"name": "HOME", "value": "/tmp"},
        ],
        "volumeMounts": mounts,
        "securityContext": common.container_security_context(),
        "terminationMessagePath": contracts.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = common.storage_env_from(secret, optional=optional)
    if env_from:
        container["envFrom"] = env_from
    limits = spec.runtime.resources.limits
    if limits:
        container["resources"] = {"limits": {k: str(v) for k, v in limits.items()}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": common.pod_security_context(settings.run_as_user),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = common.image_pull_secrets(settings.image_pull_secrets)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, source_sha256, spec, text_generation),
            "namespace": namespace,
            "labels": pod_labels,
            "annotations": {ANNOTATION_SOURCE_URI: source_uri, ANNOTATION_SOURCE_SHA: source_sha256},
            "ownerReferences": [common.owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.compression_deadline_s,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
