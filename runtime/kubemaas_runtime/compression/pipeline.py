"""compress(): a local bundle directory in, a servable output bundle directory out."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kubemaas_runtime.bundle import (
    EVAL_SET,
    MANIFEST,
    MODEL,
    Bundle,
    BundleError,
    load_bundle,
    write_manifest,
)
from kubemaas_runtime.compression import measure
from kubemaas_runtime.compression.cpu import needs_reduce_range
from kubemaas_runtime.compression.measure import Measurement, Quality, Task
from kubemaas_runtime.compression.report import REPORT, Report, write_report
from kubemaas_runtime.compression.select import gate, select
from kubemaas_runtime.compression.settings import CompressSettings
from kubemaas_runtime.compression.students import load_students, plan
from kubemaas_runtime.compression.variants import BUILDERS, BuildContext

log = logging.getLogger(__name__)
VARIANTS_DIR = "variants"


@dataclass(frozen=True)
class Outcome:
    report: Report
    bundle: Bundle | None
    """The output bundle of the selected variant; None when nothing met the gate."""


@dataclass(frozen=True)
class EvalSet:
    inputs: np.ndarray
    labels: np.ndarray


def load_eval(bundle: Bundle) -> EvalSet:
    path = bundle.eval_path
    if not path.is_file():
        raise BundleError(f"{path}: missing; compression measures accuracy on {EVAL_SET}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"inputs", "labels"} - set(data.files)
        if missing:
            raise BundleError(f"{path}: has arrays {sorted(data.files)}, missing {sorted(missing)}")
        inputs, labels = np.asarray(data["inputs"]), np.asarray(data["labels"])
    if len(inputs) == 0 or len(inputs) != len(labels):
        raise BundleError(f"{path}: inputs has {len(inputs)} rows and labels {len(labels)}; need the same, > 0")
    if len(bundle.manifest.inputs) != 1:
        names = [spec.name for spec in bundle.manifest.inputs]
        raise BundleError(f"{bundle.path / MANIFEST}: inputs {names}; compression needs exactly one ({path} has one array)")
    try:
        declared = measure.as_declared(inputs, bundle.manifest.inputs[0], str(path))
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    return EvalSet(inputs=declared, labels=labels)


def _calibration_rows(inputs: np.ndarray, rows: int) -> np.ndarray:
    pick = np.random.default_rng(0).permutation(len(inputs))[:rows]
    return np.ascontiguousarray(inputs[np.sort(pick)])


def _evaluate(
    name: str, path: Path, data: EvalSet, task: Task, baseline: Quality, reference: np.ndarray, settings: CompressSettings
) -> tuple[Measurement, ort.InferenceSession | None]:
    try:
        session = measure.open_session(path, settings.intra_op_threads, settings.inter_op_threads)
        q = measure.quality(task, measure.predict(session, data.inputs), data.labels, reference)
    except Exception as exc:  # a variant ORT cannot load or run is reported, not fatal
        log.warning("variant %s: cannot run: %s", name, exc)
        return Measurement(name=name, size_bytes=path.stat().st_size, error=f"cannot run: {exc}"), None
    m = Measurement(
        name=name,
        size_bytes=path.stat().st_size,
        accuracy=q.accuracy,
        agreement=q.agreement,
        rmse=q.rmse,
        accuracy_drop=measure.drop(task, baseline, q),
    )
    return m, session


def compress(
    bundle_dir: Path,
    out_dir: Path,
    settings: CompressSettings,
    students: Mapping[str, Path] | None = None,
    quantize: bool = True,
) -> Outcome:
    """Build every candidate variant, measure them side by side, select, write the output bundle.

    ``students``: name -> local directory of a student bundle (``kubemaas students``: pruned or
    distilled); with mode ``auto`` each enters the table with its quantized variants (students.py).
    ``quantize=False`` builds no int8/fp16 variants in ``auto`` (``--methods`` without quantize).
    """
    source = load_bundle(bundle_dir)
    pupils = load_students(source, students or {})
    if out_dir.resolve() == source.path.resolve():
        raise ValueError(f"output: {out_dir} is the input bundle; write the compressed bundle elsewhere")
    if source.manifest.task == "text-generation":
        raise BundleError(f"{source.path / MANIFEST}: task text-generation; this pipeline compresses tensor models")
    task: Task = source.manifest.task
    data = load_eval(source)
    reduce_range = needs_reduce_range() if settings.reduce_range is None else settings.reduce_range
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (MODEL, MANIFEST, EVAL_SET, REPORT):  # never leave a servable stale bundle behind
        (out_dir / stale).unlink(missing_ok=True)
    shutil.rmtree(out_dir / VARIANTS_DIR, ignore_errors=True)  # nor variants of an earlier run

    try:
        reference_session = measure.open_session(source.model_path, settings.intra_op_threads, settings.inter_op_threads)
    except Exception as exc:  # ORT's errors derive from Exception only
        raise BundleError(f"{source.model_path}: ONNX Runtime cannot load it: {exc}") from exc
    try:
        reference = measure.predict(reference_session, data.inputs)
    except Exception as exc:
        raise BundleError(
            f"{source.eval_path}: inputs of shape {list(data.inputs.shape)} do not run through {MODEL}: {exc}"
        ) from exc
    baseline = measure.quality(task, reference, data.labels, reference)
    calibration = _calibration_rows(data.inputs, settings.calibration_rows)

    measurements: list[Measurement] = []
    sessions: dict[str, ort.InferenceSession] = {}
    with tempfile.TemporaryDirectory(prefix="kubemaas-compress-") as work:
        ctx = BuildContext(
            work=Path(work), input_name=measure.single_input(reference_session), calibration=calibration,
            reduce_range=reduce_range,
        )
        for candidate in plan(source, pupils, settings.mode, quantize):
            name = candidate.name
            path = out_dir / VARIANTS_DIR / name / MODEL
            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("building variant %s", name)
            scratch = ctx.work / candidate.origin  # the variants of one model share its pre-processed file
            scratch.mkdir(exist_ok=True)
            try:
                BUILDERS[candidate.builder](candidate.model_path, path, replace(ctx, work=scratch))
            except Exception as exc:  # one failing builder must not hide the others' numbers
                log.warning("variant %s: build failed: %s", name, exc)
                measurements.append(Measurement(name=name, error=f"build failed: {type(exc).__name__}: {exc}"))
                continue
            m, session = _evaluate(name, path, data, task, baseline, reference, settings)
            measurements.append(m)
            if session is not None:
                sessions[name] = session

    timed = _time(sessions, data.inputs, settings)
    measurements = [m.model_copy(update=timed.get(m.name, {})) for m in measurements]
    measurements = gate(measurements, settings.max_accuracy_drop)
    selection = select(measurements, settings.mode, settings.max_accuracy_drop)
    report = Report(
        source_bundle=source.digest, task=task, mode=settings.mode, max_accuracy_drop=settings.max_accuracy_drop,
        intra_op_threads=settings.intra_op_threads, inter_op_threads=settings.inter_op_threads,
        latency_runs=settings.latency_runs, reduce_range=reduce_range, calibration_rows=len(calibration),
        eval_rows=len(data.inputs), baseline=baseline, variants=measurements,
        selected=selection.selected, reason=selection.reason,
    )
    write_report(out_dir, report)
    if selection.selected is None:
        return Outcome(report=report, bundle=None)
    return Outcome(report=report, bundle=_write_bundle(source, out_dir, report))


def _time(
    sessions: dict[str, ort.InferenceSession], inputs: np.ndarray, settings: CompressSettings
) -> dict[str, dict[str, float]]:
    timed: dict[str, dict[str, float]] = {name: {} for name in sessions}
    for size in measure.LATENCY_BATCHES:
        batch = measure.batch_of(inputs, size)
        for name, t in measure.latencies(sessions, batch, settings.latency_runs, settings.warmup_runs).items():
            timed[name][f"p50_batch{size}_ms"] = t.p50_ms
            timed[name][f"p95_batch{size}_ms"] = t.p95_ms
            timed[name][f"cpu_p50_batch{size}_ms"] = t.cpu_p50_ms
    return timed


def _write_bundle(source: Bundle, out_dir: Path, report: Report) -> Bundle:
    chosen = next(m for m in report.variants if m.name == report.selected)
    shutil.copyfile(out_dir / VARIANTS_DIR / chosen.name / MODEL, out_dir / MODEL)
    shutil.copyfile(source.eval_path, out_dir / EVAL_SET)
    numbers = chosen.model_dump(by_alias=True, include={
        "accuracy", "agreement", "rmse", "accuracy_drop", "size_bytes", "p50_batch1_ms", "p50_batch32_ms",
    })
    metrics = {**source.manifest.metrics, **{k: float(v) for k, v in numbers.items() if v is not None}}
    manifest = source.manifest.model_copy(update={"variant": chosen.name, "metrics": metrics})
    return write_manifest(out_dir, manifest, files=[MODEL, EVAL_SET, REPORT])
