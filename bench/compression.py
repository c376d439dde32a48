"""Compression benchmark: per variant, size ratio, p50 speed-up at batch 1 and 32, accuracy drop.

Models: the digits recipe (``kubemaas train --recipe digits``) and a transformer encoder
(4 layers, d_model 256, 4 heads, ff 1024, input [batch, 64, 256]) built in code; then students
(``kubemaas students``: structured pruning and distillation) of the digits and sequence recipes
in the same variant table as the quantized variants (sequence: 4,000 held-out rows).
Every number is measured in this run, variants interleaved round by round, with the
serving thread settings (intra=1, inter=1). Wall-clock ratios suffer on a loaded shared
machine, so thread-CPU-time ratios are printed beside them.

    .venv/bin/python bench/compression.py [--runs N] [--no-levers] [--only-students]

Writes bench/results/compression.md (bench/results/students.md with --only-students).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, whose operator.py would shadow the stdlib module
# (torch re-imports ``operator`` fresh); put the repository first instead.
sys.path[:] = [str(ROOT), str(ROOT / "runtime"), *(p for p in sys.path if Path(p).resolve() != ROOT / "bench")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from kubemaas_runtime.bundle import Bundle  # noqa: E402
from kubemaas_runtime.compression import measure  # noqa: E402
from kubemaas_runtime.compression.cpu import cpu_flags, needs_reduce_range  # noqa: E402
from kubemaas_runtime.compression.pipeline import Outcome, compress, load_eval  # noqa: E402
from kubemaas_runtime.compression.settings import CompressSettings  # noqa: E402
from kubemaas_runtime.compression.variants import preprocess  # noqa: E402
from tests.runtime.compression import models  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "compression.md"
GATE = 0.01
INT8 = ("int8-dynamic", "int8-static")


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "n/a"


def variant_table(title: str, outcome: Outcome) -> list[str]:
    rows = {m.name: m for m in outcome.report.variants}
    fp32 = rows["fp32"]
    lines = [
        f"### {title}",
        "",
        f"baseline (input fp32 model.onnx): {outcome.report.baseline.model_dump(exclude_none=True)}; "
        f"eval rows {outcome.report.eval_rows}; latency runs {outcome.report.latency_runs}; "
        f"reduce_range {outcome.report.reduce_range}",
        "",
        "| variant | size | size ratio | p50 b1 ms | speed-up b1 | p50 b32 ms | speed-up b32 | CPU-time speed-up b32 | top-1 | agreement | drop | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in outcome.report.variants:
        if m.error:
            lines.append(f"| {m.name} | failed: {m.error} |")
            continue
        mark = " (selected)" if m.name == outcome.report.selected else ""
        lines.append(
            f"| {m.name}{mark} | {m.size_bytes} | {m.size_bytes / fp32.size_bytes:.3f} | {m.p50_batch1_ms:.3f} | "
            f"{_ratio(fp32.p50_batch1_ms, m.p50_batch1_ms)} | {m.p50_batch32_ms:.3f} | "
            f"{_ratio(fp32.p50_batch32_ms, m.p50_batch32_ms)} | {_ratio(fp32.cpu_p50_batch32_ms, m.cpu_p50_batch32_ms)} | "
            f"{m.accuracy:.4f} | {m.agreement:.4f} | {m.accuracy_drop:+.4f} | {'pass' if m.passed else 'FAIL'} |"
        )
    lines += ["", f"selected: **{outcome.report.selected}**: {outcome.report.reason}", ""]
    return lines


def _levers(src: Path, work: Path, calibration: np.ndarray) -> dict[str, Path]:
    """Quantization settings beside the shipped ones, to show what each lever is worth."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter([{"input": calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = work / "pre.onnx"
    preprocess(src, pre)
    builds: dict[str, Callable[[Path], None]] = {
        "dynamic, no pre-processing": lambda out: quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8),
        "dynamic, pre-processed, 8-bit": lambda out: quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8),
        "dynamic, MatMul only, per-channel": lambda out: quantize_dynamic(
            str(pre), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True,
            reduce_range=True),
        "static QDQ, per-channel": lambda out: quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, reduce_range=True, per_channel=True),
        "static QDQ, MatMul/Gemm only": lambda out: quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, reduce_range=True, op_types_to_quantize=["MatMul", "Gemm"]),
        "static QOperator": lambda out: quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, reduce_range=True),
    }
    paths = {}
    for i, (name, build) in enumerate(builds.items()):
        paths[name] = work / f"lever-{i}.onnx"
        build(paths[name])
    return paths


def lever_table(bundle: Bundle, outcome: Outcome, runs: int) -> list[str]:
    data = load_eval(bundle)
    assert outcome.bundle is not None
    variants = outcome.bundle.path / "variants"
    with tempfile.TemporaryDirectory() as work:
        files = {
            "fp32 (optimised)": variants / "fp32" / "model.onnx",
            "shipped int8-dynamic": variants / "int8-dynamic" / "model.onnx",
            "shipped int8-static": variants / "int8-static" / "model.onnx",
            **_levers(bundle.model_path, Path(work), data.inputs[:64]),
        }
        sessions = {n: measure.open_session(p) for n, p in files.items()}
        reference = measure.predict(sessions["fp32 (optimised)"], data.inputs)
        timing = measure.latencies(sessions, measure.batch_of(data.inputs, 32), runs, 2)
        sizes = {n: p.stat().st_size for n, p in files.items()}
        agreement = {
            n: measure.quality("classification", measure.predict(s, data.inputs), data.labels, reference).agreement
            for n, s in sessions.items()
        }
    base = timing["fp32 (optimised)"]
    lines = [
        "### Encoder: quantization levers at batch 32 (one interleaved run)",
        "",
        "| build | size ratio | p50 b32 ms | speed-up b32 | CPU-time speed-up b32 | agreement with fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in timing.items():
        lines.append(
            f"| {name} | {sizes[name] / sizes['fp32 (optimised)']:.3f} | {t.p50_ms:.1f} | "
            f"{base.p50_ms / t.p50_ms:.2f}x | {base.cpu_p50_ms / t.cpu_p50_ms:.2f}x | {agreement[name]:.4f} |"
        )
    return [*lines, ""]


def pruning_table(root: Path, dense: Bundle, runs: int, amount: float = 0.6) -> list[str]:
    """Magnitude pruning (training-side, made permanent) measured against the dense model.

    ONNX Runtime's CPU kernels are dense: zeros cost what any weight costs, so pruning is
    expected to change neither speed nor file size; this table measures rather than claims.
    """
    pruned = models.train_digits(root / "digits-pruned", epochs=10, prune_amount=amount)
    data = load_eval(dense)
    files = {"dense fp32": dense.model_path, f"pruned {amount:.0%} fp32": pruned.model_path}
    sessions = {n: measure.open_session(p) for n, p in files.items()}
    t1 = measure.latencies(sessions, measure.batch_of(data.inputs, 1), runs, 2)
    t32 = measure.latencies(sessions, measure.batch_of(data.inputs, 32), runs, 2)
    base = "dense fp32"
    lines = [
        "### digits: magnitude pruning (--prune-amount, torch.nn.utils.prune, made permanent)",
        "",
        "| model | sparsity | size ratio | speed-up b1 | speed-up b32 | top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for (name, path), bundle in zip(files.items(), (dense, pruned), strict=True):
        metrics = bundle.manifest.metrics
        lines.append(
            f"| {name} | {metrics.get('sparsity', 0.0):.3f} | {path.stat().st_size / files[base].stat().st_size:.3f} | "
            f"{t1[base].p50_ms / t1[name].p50_ms:.2f}x | {t32[base].p50_ms / t32[name].p50_ms:.2f}x | "
            f"{metrics.get('accuracy', 0.0):.4f} |"
        )
    return [*lines, "", "ONNX Runtime runs pruned weights dense: no speed-up is claimed for sparsity.", ""]


def targets(digits: Outcome, encoder: Outcome) -> list[str]:
    enc = {m.name: m for m in encoder.report.variants}
    fp32 = enc["fp32"]
    built = [enc[n] for n in INT8 if enc[n].error is None]
    best = min(built, key=lambda m: m.p50_batch32_ms or float("inf"))
    best_cpu = min(built, key=lambda m: m.cpu_p50_batch32_ms or float("inf"))
    wall = (fp32.p50_batch32_ms or 0) / (best.p50_batch32_ms or 1)
    cpu = (fp32.cpu_p50_batch32_ms or 0) / (best_cpu.cpu_p50_batch32_ms or 1)
    size = max(best.size_bytes, best_cpu.size_bytes) / fp32.size_bytes
    drops = {m.name: m.accuracy_drop for m in digits.report.variants if m.name in INT8}
    worst = max(d for d in drops.values() if d is not None)
    return [
        "### Targets",
        "",
        f"- encoder, best int8 speed-up at batch 32 >= 1.6x: wall {wall:.2f}x ({best.name}), "
        f"CPU time {cpu:.2f}x ({best_cpu.name}) "
        f"-> {'met' if min(wall, cpu) >= 1.6 else 'met on CPU time only' if cpu >= 1.6 else 'NOT met'}",
        f"- encoder, its size <= 0.3x fp32: {size:.3f}x -> {'met' if size <= 0.3 else 'NOT met'}",
        f"- digits, int8 top-1 drop <= 1 point: worst {worst * 100:.2f} points -> {'met' if worst <= 0.01 else 'NOT met'}",
        "",
    ]


STUDENTS: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "pruned": {"method": "prune", "prune_ratio": 0.5},
        "distilled": {"method": "distill", "sizes": {"hidden": "64"}},
    },
    "sequence": {
        "pruned": {"method": "prune", "prune_ratio": 0.5, "drop_layers": 1},
        "distilled": {"method": "distill", "sizes": {"d_model": "32", "layers": "1", "ff": "64"}},
    },
}
"""Students per recipe (``kubemaas students`` options): Torch-Pruning with Taylor importance, and
distillation into a smaller model of the same recipe (T=2, alpha=0.5: soft targets + labels)."""
SEQUENCE_HELD_OUT = 4000
"""Held-out rows of the sequence recipe: one point of accuracy is 40 rows, well above noise."""


def student_tables(root: Path, digits_bundle: Bundle, settings: CompressSettings) -> tuple[list[str], Outcome]:
    """Students of the digits and sequence recipes in the same variant table as the quantized ones."""
    from kubemaas_runtime.bundle import load_bundle
    from kubemaas_runtime.training.config import build_config
    from kubemaas_runtime.training.loop import train_recipe
    from kubemaas_runtime.training.settings import TrainingSettings
    from kubemaas_runtime.training.students.build import StudentOptions, make_student

    training = TrainingSettings(termination_log=root / "termination-log", threads=1)
    train_recipe(build_config(output=str(root / "sequence"), recipe="sequence",
                              params={"test_size": str(SEQUENCE_HELD_OUT)}), training)
    teachers = {"digits": digits_bundle, "sequence": load_bundle(root / "sequence")}
    lines: list[str] = []
    outcome: Outcome | None = None
    for recipe, teacher in teachers.items():
        paths: dict[str, Path] = {}
        counts = []
        for name, options in STUDENTS[recipe].items():
            paths[name] = root / f"{recipe}-{name}"
            make_student(teacher.path, StudentOptions(**options), str(paths[name]), training)
            student = json.loads((paths[name] / "model.json").read_text())["source"]["student"]
            counts.append(f"{name} {student['parameters']:,} of {student['teacher']['parameters']:,} parameters "
                          f"({', '.join(f'{k}={v}' for k, v in options.items() if k != 'method')})")
        outcome = compress(teacher.path, root / f"{recipe}-students-out", settings, students=paths)
        hyper = teacher.manifest.source.hyperparameters if teacher.manifest.source else {}
        lines += variant_table(f"{recipe} recipe with students ({hyper})", outcome)
        lines += ["students: " + "; ".join(counts), ""]
        if recipe == "sequence":
            lines += op_profile_table(outcome, load_eval(teacher).inputs, 200)
    assert outcome is not None
    return lines, outcome


MATMULS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul",
           "MatMulIntegerToFloat", "QGemm"}
QUANTIZE_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}


def op_profile_table(outcome: Outcome, inputs: np.ndarray, runs: int) -> list[str]:
    """Where batch-32 time goes (ORT's profiler, one thread): why int8 does or does not pay.

    Quantization speeds up only the matrix products; the rest of the graph (layer norms, softmax,
    transposes, GELU) stays fp32, and the quantize/dequantize steps are added work (Amdahl).
    """
    import json as json_
    from collections import Counter

    names = [n for n in ("fp32", "int8-dynamic", "int8-static", "distilled", "distilled-int8-dynamic")
             if any(m.name == n and m.error is None for m in outcome.report.variants)]
    assert outcome.bundle is not None
    batch = measure.batch_of(inputs, 32)
    lines = [
        "### sequence: where batch-32 time goes (ONNX Runtime profiler, 1 thread, us per run)",
        "",
        "| variant | total | matrix products | quantize/dequantize | everything else | matmul share |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / name)
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            path = outcome.bundle.path / "variants" / name / "model.onnx"
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {measure.single_input(session): batch}
            for _ in range(runs):
                session.run(None, feed)
            events = json_.loads(Path(session.end_profiling()).read_text())
            by_op: Counter[str] = Counter()
            for e in events:
                if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
                    by_op[e["args"]["op_name"]] += e["dur"]
            total = sum(by_op.values()) / runs
            mm = sum(v for k, v in by_op.items() if k in MATMULS) / runs
            q = sum(v for k, v in by_op.items() if k in QUANTIZE_OPS) / runs
            lines.append(f"| {name} | {total:.0f} | {mm:.0f} | {q:.0f} | {total - mm - q:.0f} | {mm / total:.0%} |")
    return [*lines, ""]


def student_targets(sequence: Outcome) -> list[str]:
    """Issue 17's targets on the sequence recipe, from the one run's numbers."""
    rows = {m.name: m for m in sequence.report.variants}
    fp32 = rows["fp32"]

    def best(names: list[str]) -> tuple[str, float, float]:
        ok = [rows[n] for n in names if rows[n].passed and rows[n].p50_batch32_ms]
        if not ok:
            return "none within the gate", 0.0, 0.0
        m = min(ok, key=lambda v: v.p50_batch32_ms or float("inf"))
        return m.name, (fp32.p50_batch32_ms or 0) / (m.p50_batch32_ms or 1), (
            (fp32.cpu_p50_batch32_ms or 0) / (m.cpu_p50_batch32_ms or 1))

    plain = [n for n in rows if n in STUDENTS["sequence"]]
    quantized = [f"{s}-{q}" for s in STUDENTS["sequence"] for q in INT8 if f"{s}-{q}" in rows]
    name, wall, cpu = best(plain)
    qname, qwall, qcpu = best(quantized)
    return [
        "### Targets (students, sequence recipe at its default size)",
        "",
        f"- pruned or distilled, within 1 point, >= 2x fp32 batch-32 throughput: {name} wall {wall:.2f}x, "
        f"CPU time {cpu:.2f}x -> {'met' if wall >= 2 else 'NOT met'}",
        f"- with int8, within 1 point, >= 3x: {qname} wall {qwall:.2f}x, CPU time {qcpu:.2f}x "
        f"-> {'met' if qwall >= 3 else 'NOT met'}",
        "",
    ]


def machine() -> list[str]:
    flags = cpu_flags()
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "vnni" in f)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return [
        f"machine: {cpu}, {os.cpu_count()} CPUs, SIMD flags {' '.join(simd)}; "
        f"onnxruntime {ort.__version__}; reduce_range {needs_reduce_range()}; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per variant and batch size")
    parser.add_argument("--no-levers", action="store_true", help="skip the encoder's lever table")
    parser.add_argument("--only-students", action="store_true", help="only the digits/sequence student tables")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the quantizers' per-node advice
    lines = ["# Compression benchmark", "", *machine()]
    settings = CompressSettings(mode="auto", max_accuracy_drop=GATE, latency_runs=args.runs)
    with tempfile.TemporaryDirectory(prefix="kubemaas-bench-") as tmp:
        root = Path(tmp)
        digits_bundle = models.train_digits(root / "digits", epochs=10)
        if args.only_students:
            student_lines, sequence = student_tables(root, digits_bundle, settings)
            return _write([*lines, *student_lines, *student_targets(sequence)], RESULTS.with_name("students.md"))
        digits = compress(digits_bundle.path, root / "digits-out", settings)
        lines += variant_table("digits (kubemaas train --recipe digits, MLP)", digits)
        lines += pruning_table(root, digits_bundle, args.runs)
        encoder_bundle = models.encoder_bundle(root / "encoder")
        encoder = compress(encoder_bundle.path, root / "encoder-out", settings)
        lines += variant_table("encoder (4 layers, d_model 256, 4 heads, ff 1024, [batch, 64, 256])", encoder)
        if not args.no_levers:
            lines += lever_table(encoder_bundle, encoder, args.runs)
        lines += targets(digits, encoder)
        student_lines, sequence = student_tables(root, digits_bundle, settings)
        lines += [*student_lines, *student_targets(sequence)]
    return _write(lines, RESULTS)


def _write(lines: list[str], path: Path) -> int:
    lines.append(f"load average at end {os.getloadavg()[0]:.1f}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
