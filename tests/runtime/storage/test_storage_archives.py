"""``.tar.gz`` bundles: extracted safely; traversal, absolute paths and links refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import Bundle
from kubemaas_runtime.storage import StorageError, fetch


def test_fetch_archive(bundle: Bundle, tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle.path, arcname=".")
    got = fetch(f"file://{archive}", tmp_path / "dest")
    assert got.digest == bundle.digest


def _evil_archive(path: Path, member: tarfile.TarInfo) -> None:
    with tarfile.open(path, "w:gz") as tar:
        data = b"x"
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("../escape.txt", tarfile.REGTYPE, r"unsafe path '\.\./escape\.txt'"),
        ("/abs.txt", tarfile.REGTYPE, r"unsafe path '/abs\.txt'"),
        ("link", tarfile.SYMTYPE, r"'link' is not a regular file or directory"),
    ],
)
def test_archive_members_escaping_are_refused(name: str, kind: bytes, problem: str, tmp_path: Path) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    archive = tmp_path / "evil.tgz"
    _evil_archive(archive, member)
    with pytest.raises(StorageError, match=problem) as info:
        fetch(str(archive), tmp_path / "work" / "dest")
    assert str(archive) in str(info.value)
    assert not (tmp_path / "work" / "escape.txt").exists()
    assert list((tmp_path / "work" / "dest").iterdir()) == []
