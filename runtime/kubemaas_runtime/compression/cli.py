"""``kubemaas compress --bundle URI --output URI --mode MODE --max-accuracy-drop X``.

Plain paths are worked on in place; any ``scheme://`` URI goes through
kubemaas_runtime.storage (fetch into a scratch directory, upload the result).
Exit codes: 0 selected, 1 nothing met the gate, 2 bad input or storage failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from kubemaas_runtime.compression.settings import MODES, CompressSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="input bundle: a directory or a storage URI")
    parser.add_argument("--output", required=True, help="output bundle: a directory or a storage URI")
    parser.add_argument("--mode", choices=(*MODES, "int4", "int8"), default=None,
                        help="selection policy (default auto); int4/int8 for text-generation bundles")
    parser.add_argument("--max-perplexity-increase", type=float, default=None, dest="max_perplexity_increase",
                        help="text generation: the gate, a fraction of fp32 perplexity (default 0.05)")
    parser.add_argument("--max-accuracy-drop", type=float, default=None, help="the accuracy gate (default 0.01)")
    parser.add_argument("--latency-runs", type=int, default=None, help="timed runs per variant and batch size")
    parser.add_argument("--calibration-rows", type=int, default=None, help="eval rows used for int8-static")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads while timing (default 1)")
    parser.add_argument("--student", dest="students", action="append", default=[], metavar="NAME=LOCATION",
                        help="a student bundle (kubemaas students) to measure beside the variants, repeatable")
    parser.add_argument("--methods", default="quantize", metavar="LIST",
                        help="comma-separated subset of quantize (int8/fp16 variants), prune and distill (default "
                             "students made here: needs torch, the training image); default quantize")


def settings_from(args: argparse.Namespace) -> CompressSettings:
    overrides: dict[str, Any] = {
        "mode": args.mode,
        "max_accuracy_drop": args.max_accuracy_drop,
        "latency_runs": args.latency_runs,
        "calibration_rows": args.calibration_rows,
        "intra_op_threads": args.threads,
    }
    return CompressSettings(**{k: v for k, v in overrides.items() if v is not None})


FLAGS = {"mode": "--mode", "max_accuracy_drop": "--max-accuracy-drop", "latency_runs": "--latency-runs",
         "calibration_rows": "--calibration-rows", "intra_op_threads": "--threads"}
"""CompressSettings fields -> the flags that set them, for error messages."""


def settings_problems(exc: Any) -> str:
    """One line naming each bad flag (or ``KUBEMAAS_*`` setting) and its value, from a ValidationError."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        env = f"KUBEMAAS_{field.upper()}"
        name = f"{FLAGS[field]} ({env})" if field in FLAGS else env
        message = str(error["msg"])
        if field == "mode" and error.get("input") in ("int4", "int8"):
            message = "int4/int8 are for text-generation bundles; this is a tensor bundle, which takes " + \
                ", ".join(MODES)
        problems.append(f"{name} {error.get('input')!r}: {message}")
    return "invalid settings: " + "; ".join(problems)


def _is_uri(location: str) -> bool:
    """True for what goes through kubemaas_runtime.storage: a ``scheme://`` URI or a local
    ``.tar.gz``/``.tgz`` archive (extracted safely, like any archive ``kubemaas fetch`` reads)."""
    from kubemaas_runtime.storage.uris import is_archive

    return "://" in location or is_archive(location)


def overlap_problem(bundle: str, output: str, students: list[str]) -> str | None:
    """The error for an ``--output`` that overlaps an input, or None.

    Compression deletes and rewrites files under ``--output`` (model.onnx, model.json,
    variants/), so an output that is an input bundle, lies inside one or contains one would
    rewrite the input in place. Compared after resolving relative paths and symlinks
    (``storage.uris.nesting``); the message names both flags and both locations.
    """
    from kubemaas_runtime.compression.students import parse_student
    from kubemaas_runtime.storage.uris import nesting

    inputs = [("--bundle", bundle)]
    for value in students:
        try:
            inputs.append((f"--student {value.partition('=')[0]}", parse_student(value)[1]))
        except ValueError:  # reported with the other --student problems
            continue
    for flag, location in inputs:
        relation = nesting(output, location)
        if relation is not None:
            return (f"--output {output!r} ({_resolved(output)}) is {relation} {flag} {location!r} "
                    f"({_resolved(location)}): compression rewrites files under --output, so it would rewrite "
                    f"the input bundle; write the output to a directory outside it")
    return None


def _resolved(location: str) -> str:
    """A local location (path, ``file://``, ``pvc://``) as an absolute path with symlinks resolved;
    any other URI as given."""
    from kubemaas_runtime.storage.uris import LocalLocation, parse_uri

    parsed = parse_uri(location)  # nesting() parsed it already, so it parses
    return str(parsed.path.expanduser().resolve()) if isinstance(parsed, LocalLocation) else location


def _termination_log() -> Path | None:
    """The termination log from the environment, or None when the settings themselves are bad."""
    from pydantic import ValidationError

    try:
        return CompressSettings().termination_log
    except ValidationError:
        return None


def _students(values: list[str], scratch: Path) -> dict[str, Path]:
    """``--student NAME=LOCATION`` flags -> local directories (storage URIs are fetched)."""
    from kubemaas_runtime.compression.students import parse_student

    students: dict[str, Path] = {}
    for value in values:
        name, location = parse_student(value)
        if name in students:
            raise ValueError(f"--student {value!r}: the name {name!r} is given twice")
        if _is_uri(location):
            from kubemaas_runtime.storage import fetch

            students[name] = fetch(location, scratch / name).path
        else:
            students[name] = Path(location)
    return students


def _table(outcome_report: Any) -> str:
    rows = ["variant                  size_bytes  p50@1_ms  p50@32_ms  accuracy  drop     passed"]
    for m in outcome_report.variants:
        if m.error:
            rows.append(f"{m.name:<24} {m.error}")
            continue
        quality = m.accuracy if m.accuracy is not None else m.rmse
        rows.append(
            f"{m.name:<24} {m.size_bytes:>10}  {m.p50_batch1_ms or 0:>8.3f}  {m.p50_batch32_ms or 0:>9.3f}  "
            f"{quality or 0:>8.4f}  {m.accuracy_drop or 0:>7.4f}  {m.passed}"
        )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from kubemaas_runtime.bundle import BundleError, fetch_bytes
    from kubemaas_runtime.compression.pipeline import compress
    from kubemaas_runtime.compression.report import gate_failure, termination_message, write_termination
    from kubemaas_runtime.compression.students import build_students, parse_methods

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overlap = overlap_problem(args.bundle, args.output, args.students)
    if overlap is not None:  # before anything reads or writes either location
        message = f"kubemaas compress: {overlap}"
        sys.stderr.write(message + "\n")
        log_path = _termination_log()
        if log_path is not None:
            write_termination(log_path, termination_message(None, None, None, reason=message))
        return 2
    for noisy in ("root", "onnxruntime"):  # the quantizers log advice per node at WARNING
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from kubemaas_runtime.compression.textgen import is_text_generation, maybe_run

    textgen = maybe_run(args)  # text-generation bundles: weight-only int4/int8 gated on perplexity
    if textgen is not None:
        return textgen
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        sys.stderr.write(f"kubemaas compress: {settings_problems(exc)}\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="kubemaas-compress-io-") as scratch:
        try:
            bundle_dir = Path(args.bundle)
            if _is_uri(args.bundle):
                from kubemaas_runtime.storage import fetch

                bundle_dir = fetch(args.bundle, Path(scratch) / "input").path
                if is_text_generation(bundle_dir):  # a URI's task is known only once it is fetched
                    fetched = maybe_run(argparse.Namespace(**{**vars(args), "bundle": str(bundle_dir)}))
                    assert fetched is not None
                    return fetched
            out_dir = Path(scratch) / "output" if _is_uri(args.output) else Path(args.output)
            methods = parse_methods(args.methods)
            students = _students(args.students, Path(scratch) / "students")
            made = build_students(bundle_dir, methods, Path(scratch) / "made")
            if set(made) & set(students):
                raise ValueError(f"--student {sorted(set(made) & set(students))[0]}: also made by --methods; rename it")
            outcome = compress(bundle_dir, out_dir, settings, {**students, **made}, quantize="quantize" in methods)
            size = fetch_bytes(outcome.bundle) if outcome.bundle is not None else None
            uri = args.output
            if outcome.bundle is not None and _is_uri(args.output):
                from kubemaas_runtime.storage import upload

                uri = upload(out_dir, args.output)
        except (BundleError, ValueError, OSError) as exc:  # StorageError is a ValueError
            message = f"kubemaas compress: {exc}"
            sys.stderr.write(message + "\n")
            write_termination(settings.termination_log, termination_message(None, None, None, reason=message))
            return 2
    report = outcome.report
    sys.stdout.write(_table(report) + "\n")
    digest = outcome.bundle.digest if outcome.bundle else None
    write_termination(settings.termination_log, termination_message(report, uri, digest, size_bytes=size))
    if outcome.bundle is None:
        sys.stderr.write(gate_failure(report) + "\n")
        return 1
    sys.stdout.write(f"selected {report.selected}: {report.reason}\nbundle {uri} sha256 {digest}\n")
    return 0
