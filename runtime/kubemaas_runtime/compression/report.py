"""compression.json, the gate-failure message and the termination message (contract 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kubemaas_runtime import termination
from kubemaas_runtime.compression.measure import Measurement, Quality
from kubemaas_runtime.compression.select import Selection, drops, missed

REPORT = "compression.json"
TERMINATION_LIMIT = 4096


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


def encode_termination(message: dict[str, Any]) -> str:
    """JSON under 4096 bytes: the reason is shortened first, then variants dropped from the end."""
    text = json.dumps(message, separators=(",", ":"))
    if len(text.encode()) < TERMINATION_LIMIT:
        return text
    message = {**message, "reason": str(message["reason"])[:500]}
    while True:
        text = json.dumps(message, separators=(",", ":"))
        if len(text.encode()) < TERMINATION_LIMIT or not message["variants"]:
            return text[: TERMINATION_LIMIT - 1]
        message = {**message, "variants": message["variants"][:-1]}


def write_termination(path: Path, message: dict[str, Any]) -> bool:
    """Write the termination message where Kubernetes reads it, if it can be written
    (`termination.can_write`: in a pod, the mounted file is writable but /dev is not)."""
    if not termination.can_write(path):
        return False
    path.write_text(encode_termination(message))
    return True
