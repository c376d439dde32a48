"""Fetch over http from a real ``http.server`` on loopback (tests/runtime/storage/webserver.py):
plain fetches, and servers that trickle, stall, cut the body short or redirect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import MANIFEST, MODEL, Bundle
from kubemaas_runtime.storage import StorageError, StorageSettings, fetch, upload
from kubemaas_runtime.storage.http import redirect_allowed
from tests.runtime.storage.webserver import CUT_BYTES, STALL_BYTES, serve


@pytest.fixture
def web(bundle: Bundle, tmp_path: Path) -> Iterator[str]:
    """The web root holds the test bundle under ``b/``; yields the base URL."""
    root = tmp_path / "www"
    upload(bundle.path, str(root / "b"))
    with serve(root) as base:
        yield base


def test_fetch_over_http_reads_manifest_then_listed_files(bundle: Bundle, web: str, tmp_path: Path) -> None:
    got = fetch(f"{web}/files/b/", tmp_path / "dest")
    assert got.digest == bundle.digest
    assert not (tmp_path / "dest" / "variants").exists()


def test_http_404_names_the_url(web: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"fetch {web}/files/missing: no model\.json there, .*model\.json: 404 Not Found"):
        fetch(f"{web}/files/missing", tmp_path / "dest")


def test_http_checksum_mismatch(bundle: Bundle, web: str, tmp_path: Path) -> None:
    served = tmp_path / "www" / "b" / MODEL
    served.write_bytes(bytes(len(served.read_bytes())))  # same size, other bytes
    with pytest.raises(StorageError, match=r"model\.onnx: sha256 .* does not match"):
        fetch(f"{web}/files/b", tmp_path / "dest")


def test_unreachable_host_gives_up_after_bounded_tries(tmp_path: Path) -> None:
    settings = StorageSettings(attempts=2, retry_backoff_s=0.01, stall_timeout_s=2)
    # Port 9 (discard) is closed on loopback: connection refused, a transient error, retried twice.
    with pytest.raises(StorageError, match=r"GET http://127\.0\.0\.1:9/x/model\.json: gave up after 2 tries"):
        fetch("http://127.0.0.1:9/x", tmp_path / "dest", settings)


def test_http_is_read_only(bundle: Bundle) -> None:
    with pytest.raises(StorageError, match="read-only"):
        upload(bundle.path, "http://127.0.0.1:9/x")


# -- slow servers: the overall deadline and the stall timeout ---------------------------------


def test_trickling_server_hits_the_overall_deadline(web: str, tmp_path: Path) -> None:
    """A byte every 0.05 s never trips a 2 s stall timeout; the 0.5 s deadline ends the fetch."""
    settings = StorageSettings(stall_timeout_s=2, deadline_s=0.5, attempts=1)
    with pytest.raises(StorageError, match=r"model\.json: overall deadline of 0\.5 s passed after receiving (\d+) bytes") as info:
        fetch(f"{web}/trickle/b", tmp_path / "dest", settings)
    assert "KUBEMAAS_DEADLINE_S" in str(info.value)
    assert not (tmp_path / "dest" / MANIFEST).exists()


def test_stalled_server_hits_the_stall_timeout(web: str, tmp_path: Path) -> None:
    settings = StorageSettings(stall_timeout_s=0.3, deadline_s=30, attempts=1)
    with pytest.raises(
        StorageError, match=rf"model\.json: stalled: no byte for 0\.3 s after receiving {STALL_BYTES} bytes"
    ):
        fetch(f"{web}/stall/b", tmp_path / "dest", settings)


def test_stalls_are_retried_within_the_attempts(web: str, tmp_path: Path) -> None:
    settings = StorageSettings(stall_timeout_s=0.2, deadline_s=30, attempts=2, retry_backoff_s=0.01)
    with pytest.raises(StorageError, match=r"gave up after 2 tries: .*stalled: no byte for 0\.2 s"):
        fetch(f"{web}/stall/b", tmp_path / "dest", settings)


def test_connection_cut_short_is_reported_as_truncated(web: str, tmp_path: Path) -> None:
    size = (tmp_path / "www" / "b" / MANIFEST).stat().st_size
    with pytest.raises(
        StorageError, match=rf"model\.json: truncated: expected {size} bytes, received {size - CUT_BYTES}"
    ):
        fetch(f"{web}/cut/b", tmp_path / "dest", StorageSettings(attempts=1))


def test_shorter_file_on_the_server_is_truncated_not_a_checksum_mismatch(
    bundle: Bundle, web: str, tmp_path: Path
) -> None:
    served = tmp_path / "www" / "b" / MODEL
    size = served.stat().st_size
    served.write_bytes(served.read_bytes()[:-10])
    with pytest.raises(StorageError, match=rf"model\.onnx: truncated: expected {size} bytes, received {size - 10}"):
        fetch(f"{web}/files/b", tmp_path / "dest")


def test_larger_file_on_the_server_is_refused_before_reading_it(bundle: Bundle, web: str, tmp_path: Path) -> None:
    served = tmp_path / "www" / "b" / MODEL
    size = served.stat().st_size
    served.write_bytes(served.read_bytes() + bytes(1 << 20))
    with pytest.raises(StorageError, match=rf"offers {size + (1 << 20)} bytes, but the manifest records {size}"):
        fetch(f"{web}/files/b", tmp_path / "dest")
    assert not (tmp_path / "dest" / MODEL).exists()


# -- redirects --------------------------------------------------------------------------------


def test_five_redirects_are_followed(bundle: Bundle, web: str, tmp_path: Path) -> None:
    assert fetch(f"{web}/r5/b", tmp_path / "dest").digest == bundle.digest


def test_a_sixth_redirect_is_refused(web: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"more than 5 redirects \(KUBEMAAS_MAX_REDIRECTS\)"):
        fetch(f"{web}/r6/b", tmp_path / "dest")


def test_redirect_budget_is_a_setting(bundle: Bundle, web: str, tmp_path: Path) -> None:
    assert fetch(f"{web}/r6/b", tmp_path / "dest", StorageSettings(max_redirects=6)).digest == bundle.digest
    with pytest.raises(StorageError, match=r"more than 0 redirects"):
        fetch(f"{web}/r1/b", tmp_path / "dest2", StorageSettings(max_redirects=0))


@pytest.mark.parametrize("scheme", ["ftp", "file", "gopher"])
def test_redirect_out_of_http_is_refused(scheme: str, web: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"redirect to {scheme}://127\.0\.0\.1:\d+/files/b/model\.json refused") as info:
        fetch(f"{web}/to/{scheme}/b", tmp_path / "dest")
    assert "gave up" not in str(info.value)  # refused at once, not retried


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("http://a/x", "http://b/y", True),
        ("https://a/x", "https://b/y", True),
        ("http://a/x", "https://a/x", True),
        ("HTTP://a/x", "HTTPS://a/x", True),
        ("https://a/x", "http://a/x", False),
        ("http://a/x", "ftp://a/x", False),
        ("https://a/x", "file:///etc/passwd", False),
        ("http://a/x", "s3://bucket/key", False),
    ],
)
def test_redirect_policy(source: str, target: str, allowed: bool) -> None:
    assert redirect_allowed(source, target) is allowed
