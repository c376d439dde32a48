"""``kubemaas compress`` refuses an ``--output`` that overlaps an input bundle (it rewrote the input in
place: the tensor pipeline only refused the literally equal path, and text-generation bundles not even
that). Same, inside and containing; through relative paths, symlinks and ``file://``; for ``--bundle``
and ``--student``. The input bundle is a real trained one and must come out byte for byte unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import Bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.storage.uris import nesting


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _same_relative(b: Path) -> str:
    return os.path.relpath(b.parent / "x" / ".." / b.name)


def _same_symlink(b: Path) -> str:
    link = b.parent / "link"
    link.symlink_to(b, target_is_directory=True)
    return str(link)


def _inside_symlink(b: Path) -> str:
    link = b.parent / "link"
    link.symlink_to(b, target_is_directory=True)
    return str(link / "out")


OUTPUTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "same-path": (str, "the same location as"),
    "same-relative": (_same_relative, "the same location as"),
    "same-symlink": (_same_symlink, "the same location as"),
    "same-file-uri": (lambda b: f"file://{b}", "the same location as"),
    "inside": (lambda b: str(b / "variants" / "out"), "inside"),
    "inside-symlink": (_inside_symlink, "inside"),
    "contains": (lambda b: str(b.parent), "contains"),
}


@pytest.fixture
def bundle(digits: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained digits bundle at ``tmp/work/bundle``; cwd is ``tmp``."""
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(digits.path, tmp_path / "work" / "bundle"))


@pytest.mark.parametrize("case", OUTPUTS)
def test_an_output_overlapping_the_bundle_is_refused_and_the_bundle_is_untouched(
        case: str, bundle: Path, termination_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_output, relation = OUTPUTS[case]
    output = make_output(bundle)
    before = tree(bundle.parent)

    assert main(["compress", "--bundle", str(bundle), "--output", output, "--mode", "fp16"]) == 2

    err = capsys.readouterr().err
    resolved = Path(output.removeprefix("file://")).resolve()
    assert err.startswith(f"kubemaas compress: --output {output!r} ({resolved}) "
                          f"is {relation} --bundle {str(bundle)!r} ({bundle.resolve()}): ")
    assert tree(bundle.parent) == before  # nothing written, deleted or rewritten
    assert json.loads(termination_log.read_text())["reason"] == err.strip()


def test_an_output_inside_a_student_bundle_is_refused(
        bundle: Path, termination_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    student = Path(shutil.copytree(bundle, bundle.parent / "student"))
    before = tree(bundle.parent)

    argv = ["compress", "--bundle", str(bundle), "--output", "work/student/out", "--student", f"small={student}"]
    assert main(argv) == 2

    err = capsys.readouterr().err
    assert f"--output 'work/student/out' ({student.resolve() / 'out'}) is inside --student small {str(student)!r}" in err
    assert tree(bundle.parent) == before


@pytest.mark.parametrize(("first", "second", "relation"), [
    ("s3://models/digits", "s3://models/digits/", "the same location as"),
    ("s3://models/digits/out", "s3://models/digits", "inside"),
    ("s3://models", "s3://models/digits", "contains"),
    ("s3://models/digits-int8", "s3://models/digits", None),  # a longer name is not a sub-prefix
    ("s3://other/digits", "s3://models/digits", None),
    ("https://Host.example/m/out", "https://host.example/m", "inside"),
    ("/data/digits-out", "/data/digits", None),
])
def test_nesting_compares_whole_path_segments(first: str, second: str, relation: str | None) -> None:
    assert nesting(first, second) == relation
