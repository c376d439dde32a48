"""``.tar.gz`` bundles: extracted safely; traversal, absolute paths, links and bombs refused;
a bundle inside one top-level folder accepted."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubemaas_runtime.bundle import Bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.storage import StorageError, StorageSettings, fetch


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


# -- bombs ------------------------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, generated as read (a bomb's payload without holding it in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bundle_archive(path: Path, bundle: Bundle, extra: dict[str, int]) -> None:
    """A real bundle at the archive's root plus ``extra`` files of zeros (name -> bytes)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(bundle.path, arcname=".")
        for name, size in extra.items():
            member = tarfile.TarInfo(name)
            member.size = size
            tar.addfile(member, _Zeros(size))


def test_archive_bomb_is_refused_by_the_expansion_ratio(bundle: Bundle, tmp_path: Path) -> None:
    """64 MiB of zeros gzip to ~64 KiB: ~1000:1, ten times the default limit of 100:1."""
    archive = tmp_path / "bomb.tar.gz"
    _bundle_archive(archive, bundle, {"padding.bin": 64 << 20})
    compressed = archive.stat().st_size
    assert compressed < (64 << 20) / 100
    with pytest.raises(StorageError, match=r"extracts to more than 100 times its size .*KUBEMAAS_MAX_EXPANSION_RATIO") as info:
        fetch(str(archive), tmp_path / "dest")
    assert f"{archive}: archive of {compressed} bytes" in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []  # nothing written, the bundle's own files included


def test_archive_over_the_total_limit_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    archive = tmp_path / "big.tgz"
    _bundle_archive(archive, bundle, {"extra.bin": 2 << 20})
    settings = StorageSettings(max_bundle_bytes=1 << 20, max_expansion_ratio=1e9)
    with pytest.raises(
        StorageError, match=rf"{archive}: archive extracts to more than {1 << 20} bytes .*KUBEMAAS_MAX_BUNDLE_BYTES"
    ):
        fetch(str(archive), tmp_path / "dest", settings)
    assert list((tmp_path / "dest").iterdir()) == []


def test_limits_can_be_raised(bundle: Bundle, tmp_path: Path) -> None:
    archive = tmp_path / "zeros.tgz"
    _bundle_archive(archive, bundle, {"padding.bin": 8 << 20})
    got = fetch(str(archive), tmp_path / "dest", StorageSettings(max_expansion_ratio=100_000))
    assert got.digest == bundle.digest
    assert (tmp_path / "dest" / "padding.bin").stat().st_size == 8 << 20


def test_limits_come_from_the_environment(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "b.tgz"
    _bundle_archive(archive, bundle, {})
    monkeypatch.setenv("KUBEMAAS_MAX_BUNDLE_BYTES", "100")
    assert main(["fetch", str(archive), str(tmp_path / "dest")]) == 1
    assert "above the limit of 100 bytes (KUBEMAAS_MAX_BUNDLE_BYTES); not copied" in capsys.readouterr().err


# -- layout: the bundle at the root or inside one top-level folder ----------------------------


def test_single_top_level_folder_is_the_bundle(bundle: Bundle, tmp_path: Path) -> None:
    """``tar czf bundle.tgz bundle/``: the files land in dest, not in dest/bundle."""
    archive = tmp_path / "bundle.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle.path, arcname="bundle")
    got = fetch(str(archive), tmp_path / "dest")
    assert got.digest == bundle.digest
    assert got.path == tmp_path / "dest"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["eval.npz", "model.json", "model.onnx", "variants"]


def test_macos_metadata_beside_the_folder_is_left_out(bundle: Bundle, tmp_path: Path) -> None:
    """macOS tar adds ``._bundle`` (AppleDouble) beside ``bundle/``; it is neither a second folder nor extracted."""
    archive = tmp_path / "mac.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle.path, arcname="bundle")
        _add_bytes(tar, "._bundle", b"\x00\x05\x16\x07")
        _add_bytes(tar, "__MACOSX/bundle/._model.onnx", b"\x00\x05\x16\x07")
    assert fetch(str(archive), tmp_path / "dest").digest == bundle.digest
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["eval.npz", "model.json", "model.onnx", "variants"]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize(
    ("arcnames", "listing"),
    [
        (["a", "b"], "a/, a/eval.npz, a/model.json"),
        (["outer/inner"], "outer/inner/, outer/inner/eval.npz, outer/inner/model.json, outer/inner/model.onnx"),
    ],
)
def test_archive_without_a_bundle_lists_what_it_holds(
    arcnames: list[str], listing: str, bundle: Bundle, tmp_path: Path
) -> None:
    archive = tmp_path / "odd.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in arcnames:
            tar.add(bundle.path, arcname=name)
    with pytest.raises(StorageError, match=r"no model\.json at the archive's root or inside a single top-level folder") as info:
        fetch(str(archive), tmp_path / "dest")
    assert f"the archive holds: {listing}" in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []
