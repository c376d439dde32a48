"""Student bundles (pruned or distilled by ``kubemaas students``) as candidates of the variant table.

A student enters the table under its own name (its fp32 model, ORT-optimised like the teacher's
``fp32`` variant) and, when the mode is ``auto``, quantized as ``<name>-int8-dynamic``,
``<name>-int8-static`` and ``<name>-fp16`` (names that fit a Kubernetes label value): the same builders, measured on the teacher's
``eval.npz`` against the teacher's fp32 outputs, so one gate (``maxAccuracyDrop``) and one policy
judge every candidate. Students are built in the training image (they need torch); this module
needs only ONNX Runtime, so ``kubemaas compress`` keeps running in the serving image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubemaas_runtime import contracts
from kubemaas_runtime.bundle import MANIFEST, Bundle, BundleError, load_bundle
from kubemaas_runtime.compression.variants import BUILDERS, FP32, candidates

METHODS = contracts.COMPRESSION_METHODS
"""``--methods``: quantize = the int8/fp16 variants; prune/distill = students made in this pod."""
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
SEPARATOR = "-"
"""Between a student's name and a quantization: ``distilled-int8-static``."""


@dataclass(frozen=True)
class Candidate:
    """One variant to build: from which model file, with which builder."""

    name: str
    """The variant's name in the table (``fp32``, ``int8-static``, ``distilled``, ``distilled-int8-static``)."""
    model_path: Path
    """The fp32 ONNX file it is built from (the teacher's or a student's model.onnx)."""
    builder: str
    """Key of ``variants.BUILDERS``."""
    origin: str
    """``teacher`` or the student's name: builds of one origin share a scratch directory."""


def parse_student(value: str) -> tuple[str, str]:
    """``NAME=LOCATION`` (the ``--student`` flag) -> (name, location); ``ValueError`` naming the value."""
    name, sep, location = value.partition("=")
    if not sep or not location:
        raise ValueError(f"--student {value!r}: expected NAME=LOCATION, e.g. distilled=/models/student")
    check_name(name)
    return name, location


def check_name(name: str) -> str:
    if not NAME.match(name) or name in BUILDERS or name == "teacher":
        raise ValueError(
            f"student name {name!r}: use 1-32 lower-case letters, digits and '-', not a variant name "
            f"({', '.join(BUILDERS)}) nor 'teacher'"
        )
    return name


def load_students(teacher: Bundle, locations: Mapping[str, Path]) -> dict[str, Bundle]:
    """Verify each student bundle and that it can stand in for ``teacher``.

    Raises ``BundleError`` naming the student when its checksums fail, when its inputs/outputs
    differ from the teacher's (the server's signature and the eval set must fit both), or when its
    manifest says it was made from another bundle than ``teacher``.
    """
    students: dict[str, Bundle] = {}
    for name, path in locations.items():
        try:
            check_name(name)
        except ValueError as exc:
            raise BundleError(str(exc)) from exc
        student = load_bundle(path)
        m, t = student.manifest, teacher.manifest
        if (m.inputs, m.outputs) != (t.inputs, t.outputs):
            raise BundleError(
                f"student {name} ({path / MANIFEST}): inputs {[s.model_dump() for s in m.inputs]} and outputs "
                f"{[s.model_dump() for s in m.outputs]} differ from the teacher's "
                f"{[s.model_dump() for s in t.inputs]} and {[s.model_dump() for s in t.outputs]}"
            )
        if m.task != t.task or m.labels != t.labels:
            raise BundleError(f"student {name} ({path / MANIFEST}): task or labels differ from the teacher's")
        lineage = (m.source.model_extra or {}).get("student") if m.source is not None else None
        made_from = lineage.get("teacher", {}).get("sha256") if isinstance(lineage, dict) else None
        if made_from is not None and made_from != teacher.digest:
            raise BundleError(
                f"student {name} ({path / MANIFEST}) was made from bundle sha256 {made_from}, "
                f"not from this one ({teacher.digest})"
            )
        students[name] = student
    return students


def plan(teacher: Bundle, students: Mapping[str, Bundle], mode: str, quantize: bool = True) -> list[Candidate]:
    """Every variant to build: the teacher's for ``mode``, then each student's (``auto`` only;
    a fixed mode names one of the teacher's variants, so students are not built for it).
    ``quantize=False`` (``--methods`` without quantize) keeps ``auto`` to the fp32 models."""
    builders = candidates(mode) if quantize or mode != "auto" else [FP32]
    out = [Candidate(name, teacher.model_path, name, "teacher") for name in builders]
    if mode != "auto":
        return out
    for student, bundle in students.items():
        for builder in builders:
            name = student if builder == FP32 else f"{student}{SEPARATOR}{builder}"
            out.append(Candidate(name, bundle.model_path, builder, student))
    names = [c.name for c in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise BundleError(f"student names {sorted(students)} give the variant name {clash[0]!r} twice; rename one")
    return out


def parse_methods(value: str) -> list[str]:
    """``--methods quantize,prune,distill`` -> the list; ``ValueError`` naming an unknown method."""
    methods = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods {value!r}: use a comma-separated subset of {', '.join(METHODS)}")
    return methods


def build_students(bundle_dir: Path, methods: Sequence[str], scratch: Path) -> dict[str, Path]:
    """Make the default ``pruned``/``distilled`` students of ``methods`` under ``scratch`` (torch:
    the training image); name -> bundle directory. ``ValueError`` says why it cannot (no torch,
    a bundle that cannot be rebuilt, an impossible student)."""
    wanted = [m for m in methods if m in ("prune", "distill")]
    if not wanted:
        return {}
    try:
        from kubemaas_runtime.training.errors import TrainingError
        from kubemaas_runtime.training.settings import TrainingSettings
        from kubemaas_runtime.training.students.build import make_default_students
    except ImportError as exc:
        raise ValueError(
            f"--methods {','.join(wanted)}: students need torch; run kubemaas compress in the training image ({exc})"
        ) from exc
    try:
        # the pod's termination message is compress's to write, not the students' training runs'
        settings = TrainingSettings(termination_log=scratch / "student-termination-log")
        return make_default_students(bundle_dir, wanted, scratch, settings)  # type: ignore[arg-type]
    except TrainingError as exc:
        raise ValueError(f"--methods {','.join(wanted)}: {exc}") from exc
