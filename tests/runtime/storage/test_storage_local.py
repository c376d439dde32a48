"""Fetch and upload with plain paths, file:// and pvc:// (a claim mounted under the PVC root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import MANIFEST, MODEL, Bundle, sha256_file
from kubemaas_runtime.cli import main
from kubemaas_runtime.storage import StorageError, StorageSettings, fetch, upload


def test_fetch_plain_path_copies_listed_files_and_verifies(bundle: Bundle, tmp_path: Path) -> None:
    got = fetch(str(bundle.path), tmp_path / "dest")
    assert got.digest == bundle.digest
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["eval.npz", "model.json", "model.onnx"]


def test_fetch_file_uri(bundle: Bundle, tmp_path: Path) -> None:
    got = fetch(f"file://{bundle.path}", tmp_path / "dest")
    assert got.manifest.labels == ["a", "b", "c"]


def test_pvc_upload_then_fetch_reads_under_the_claim_mount(bundle: Bundle, tmp_path: Path) -> None:
    settings = StorageSettings(pvc_root=tmp_path / "pvc")
    assert upload(bundle.path, "pvc://models/runs/1", settings) == "pvc://models/runs/1"
    assert (tmp_path / "pvc" / "models" / "runs" / "1" / "variants" / "int8" / MODEL).is_file()
    got = fetch("pvc://models/runs/1", tmp_path / "dest", settings)
    assert got.digest == bundle.digest


def test_pvc_uri_with_dotdot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"pvc://models/\.\./etc.*must not contain '\.\.'"):
        fetch("pvc://models/../etc", tmp_path / "dest", StorageSettings(pvc_root=tmp_path))


def test_checksum_mismatch_names_the_file(bundle: Bundle, tmp_path: Path) -> None:
    size = (bundle.path / MODEL).stat().st_size
    (bundle.path / MODEL).write_bytes(b"t" * size)  # tampered, same size
    with pytest.raises(StorageError, match=rf"fetch {bundle.path}: .*model\.onnx: sha256 .* does not match"):
        fetch(str(bundle.path), tmp_path / "dest")


def test_manifest_with_traversal_is_refused_before_any_copy(bundle: Bundle, tmp_path: Path) -> None:
    raw = json.loads((bundle.path / MANIFEST).read_text())
    raw["files"]["../outside.txt"] = {"sha256": sha256_file(bundle.path / MODEL), "size": 1}
    (bundle.path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(StorageError, match=r"unsafe path '\.\./outside\.txt'"):
        fetch(str(bundle.path), tmp_path / "work" / "dest")
    assert not (tmp_path / "work" / "outside.txt").exists()
    assert not (tmp_path / "work" / "dest" / MODEL).exists()


def test_missing_manifest_names_the_uri(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match=rf"fetch {tmp_path / 'empty'}: no model\.json there"):
        fetch(str(tmp_path / "empty"), tmp_path / "dest")


def test_listed_file_missing_names_it(bundle: Bundle, tmp_path: Path) -> None:
    (bundle.path / "eval.npz").unlink()
    with pytest.raises(StorageError, match=r"eval\.npz is listed in model\.json but missing"):
        fetch(str(bundle.path), tmp_path / "dest")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("s3://Bad_Bucket/x", "bucket name 'Bad_Bucket'"),
        ("pvc://UPPER/x", "claim name 'UPPER'"),
        ("file://remote-host/x", "must not name a host"),
    ],
)
def test_bad_uris_are_named(uri: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=problem) as info:
        fetch(uri, tmp_path / "dest")
    assert uri in str(info.value)


def test_cli_fetch_prints_summary(bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", str(bundle.path), str(tmp_path / "dest")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sha256"] == bundle.digest
    assert summary["name"] == "tiny"


def test_cli_fetch_error_exit_code_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", str(tmp_path / "nope"), str(tmp_path / "dest")]) == 1
    assert f"kubemaas fetch: fetch {tmp_path / 'nope'}: no model.json there" in capsys.readouterr().err


def test_size_mismatch_is_reported_before_the_checksum(bundle: Bundle, tmp_path: Path) -> None:
    size = (bundle.path / MODEL).stat().st_size
    (bundle.path / MODEL).write_bytes(b"t" * (size - 10))
    with pytest.raises(StorageError, match=rf"model\.onnx: {size - 10} bytes, but model\.json records {size}"):
        fetch(str(bundle.path), tmp_path / "dest")


def test_schema_1_manifest_is_still_read(bundle: Bundle, tmp_path: Path) -> None:
    raw = json.loads((bundle.path / MANIFEST).read_text())
    assert raw["schemaVersion"] == 2
    old = {k: v for k, v in raw.items() if k not in ("schemaVersion", "batchAxis")}
    old["files"] = {rel: entry["sha256"] for rel, entry in raw["files"].items()}
    (bundle.path / MANIFEST).write_text(json.dumps(old))
    got = fetch(str(bundle.path), tmp_path / "dest")
    assert (got.manifest.schema_version, got.manifest.batch_axis) == (1, None)
    assert got.manifest.files[MODEL].sha256 == raw["files"][MODEL]["sha256"]


def test_manifest_recording_more_than_the_limit_is_refused_before_any_copy(bundle: Bundle, tmp_path: Path) -> None:
    total = sum(entry.size or 0 for entry in bundle.manifest.files.values())
    with pytest.raises(StorageError, match=rf"model\.json records {total} bytes in all, above the limit of 100 bytes"):
        fetch(str(bundle.path), tmp_path / "dest", StorageSettings(max_bundle_bytes=100))
    assert list((tmp_path / "dest").iterdir()) == []
