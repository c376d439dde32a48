"""compression.json, the gate-failure message and the termination message (contract 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kubemaas_runtime import contracts, termination
from kubemaas_runtime.compression.measure import Measurement, Quality
from kubemaas_runtime.compression.select import Selection, drops, missed

REPORT = "compression.json"
TERMINATION_LIMIT = contracts.TERMINATION_LIMIT


class Report(BaseModel):
    """Everything one ``kubemaas compress`` run measured and decided."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    source_bundle: str
    """sha256 of the input bundle's model.json."""
    task: str
    mode: str
    max_accuracy_drop: float
    intra_op_threads: int
    inter_op_threads: int
    latency_runs: int
    reduce_range: bool
    calibration_rows: int
    eval_rows: int
    baseline: Quality
    """The input fp32 model.onnx on eval.npz: the reference every drop is relative to."""
    variants: list[Measurement]
    selected: str | None
    reason: str

    @property
    def selection(self) -> Selection:
        return Selection(selected=self.selected, reason=self.reason)


def write_report(directory: Path, report: Report) -> Path:
    path = directory / REPORT
    path.write_text(json.dumps(report.model_dump(by_alias=True, mode="json"), indent=2) + "\n")
    return path


def gate_failure(report: Report) -> str:
    """The message for a run where nothing met the gate: the variants that missed it, then every drop."""
    return (
        f"kubemaas compress: no variant meets the gate (mode {report.mode}, "
        f"max accuracy drop {report.max_accuracy_drop}): {drops(report.variants)}; "
        f"missed by {missed(report.variants, report.max_accuracy_drop)}"
    )


def termination_message(
    report: Report | None, uri: str | None, digest: str | None, reason: str = "", *, size_bytes: int | None = None,
) -> dict[str, Any]:
    """Contract 3's compress message; ``bundle`` is null unless a variant was selected.

    ``size_bytes``: what a fetch of the output bundle writes (``bundle.fetch_bytes``), recorded as
    ``bundle.sizeBytes`` so the operator can size the serving pod's model volume."""
    variant_keys = (
        "name", "sizeBytes", "p50Batch1Ms", "p95Batch1Ms", "p50Batch32Ms", "p95Batch32Ms",
        "accuracy", "accuracyDrop", "agreement", "rmse", "passed",
    )
    variants = []
    for m in report.variants if report else []:
        dumped = m.model_dump(by_alias=True, mode="json")
        entry = {k: dumped[k] for k in variant_keys if dumped.get(k) is not None or k == "accuracyDrop"}
        variants.append({k: round(v, 6) if isinstance(v, float) else v for k, v in entry.items()})
    selected = report.selected if report else None
    return {
        "selected": selected,
        "reason": report.reason if report else reason,
        "bundle": bundle_ref(uri, digest, size_bytes) if selected and uri and digest else None,
        "variants": variants,
    }


def bundle_ref(uri: str, digest: str, size_bytes: int | None) -> dict[str, Any]:
    """The report's ``bundle`` object: uri, sha256 and, when known, sizeBytes."""
    return {"uri": uri, "sha256": digest, **({"sizeBytes": size_bytes} if size_bytes is not None else {})}


COMPACT_KEYS = ("name", "sizeBytes", "accuracyDrop", "perplexityIncrease", "passed")
"""What a variant other than the selected one keeps once the message must shrink: enough for the
operator's table and gate messages (``status.compression.variants``)."""
REASON_CHARS = 500
"""Characters of ``reason`` kept once the message must shrink."""


def _keep_order(variants: list[dict[str, Any]], selected: str | None) -> list[int]:
    """Indices of ``variants`` from most to least worth keeping: the selected one, then those that
    passed the gate, then the rest; within each, the smallest accuracy drop (or perplexity increase)
    first, then report order. Deterministic, so a rerun leaves out the same variants."""
    def rank(i: int) -> tuple[int, float, int]:
        v = variants[i]
        measure = v.get("accuracyDrop") if v.get("accuracyDrop") is not None else v.get("perplexityIncrease")
        group = 0 if v.get("name") == selected else 1 if v.get("passed") else 2
        return group, float(measure) if isinstance(measure, int | float) else math.inf, i
    return sorted(range(len(variants)), key=rank)


def _encode(message: dict[str, Any]) -> str | None:
    text = json.dumps(message, separators=(",", ":"))
    return text if len(text.encode()) < TERMINATION_LIMIT else None


def encode_termination(message: dict[str, Any]) -> str:
    """The message as JSON under ``TERMINATION_LIMIT`` bytes (Kubernetes keeps no more), valid JSON
    at every size. Shrinks in fixed steps until it fits:

    1. ``reason`` cut to ``REASON_CHARS``;
    2. every variant but the selected one cut to ``COMPACT_KEYS``;
    3. variants left out, least worth keeping first (``_keep_order``; never the selected one, never
       ``bundle``): the rest stay in report order, ``variantsOmitted``/``variantsTotal`` count them
       and ``reason`` ends with ``contracts.omitted_variants_note`` (the log's table and compression.json have them all);
    4. only for names or URIs of kilobytes: no reason, then no variants at all, then a bare failure.
    """
    text = _encode(message)
    if text is not None:
        return text
    reason = str(message.get("reason") or "")
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 15] + " ...(truncated)"
    selected = message.get("selected")
    variants: list[dict[str, Any]] = list(message.get("variants") or [])
    compact = [v if v.get("name") == selected else {k: v[k] for k in COMPACT_KEYS if k in v} for v in variants]
    for trimmed in ({**message, "reason": reason}, {**message, "reason": reason, "variants": compact}):
        text = _encode(trimmed)
        if text is not None:
            return text
    order = _keep_order(compact, selected)
    for kept in range(len(compact) - 1, -1, -1):
        keep = sorted(order[:kept])
        omitted = len(compact) - kept
        note = contracts.omitted_variants_note(omitted, len(compact))
        text = _encode({**message, "reason": f"{reason} {note}".strip(), "variants": [compact[i] for i in keep],
                        "variantsOmitted": omitted, "variantsTotal": len(compact)})
        if text is not None:
            return text
    note = contracts.omitted_variants_note(len(compact), len(compact))
    bare = {**message, "reason": note, "variants": [], "variantsOmitted": len(compact), "variantsTotal": len(compact)}
    return _encode(bare) or json.dumps({"selected": None, "reason": "the compression report does not fit in a "
                                        f"termination message; {REPORT} has it", "bundle": None, "variants": []})


def write_termination(path: Path, message: dict[str, Any]) -> bool:
    """Write the termination message where Kubernetes reads it, if it can be written
    (`termination.can_write`: in a pod, the mounted file is writable but /dev is not)."""
    if not termination.can_write(path):
        return False
    path.write_text(encode_termination(message))
    return True
