"""Fetch over http from a real ``http.server`` on loopback serving a bundle directory."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubemaas_runtime.bundle import MODEL, Bundle
from kubemaas_runtime.storage import StorageError, StorageSettings, fetch, upload


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def test_fetch_over_http_reads_manifest_then_listed_files(
    bundle: Bundle, web_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = web_root
    upload(bundle.path, str(root / "models" / "tiny"))
    got = fetch(f"{base}/models/tiny/", tmp_path / "dest")
    assert got.digest == bundle.digest
    assert not (tmp_path / "dest" / "variants").exists()


def test_http_404_names_the_url(web_root: tuple[Path, str], tmp_path: Path) -> None:
    _, base = web_root
    with pytest.raises(StorageError, match=rf"fetch {base}/missing: no model\.json there, .*model\.json: 404 Not Found"):
        fetch(f"{base}/missing", tmp_path / "dest")


def test_http_checksum_mismatch(bundle: Bundle, web_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base = web_root
    upload(bundle.path, str(root / "b"))
    size = (root / "b" / MODEL).stat().st_size
    (root / "b" / MODEL).write_bytes(b"x" * size)  # swapped on the server, same size
    with pytest.raises(StorageError, match=r"model\.onnx: sha256 .* does not match"):
        fetch(f"{base}/b", tmp_path / "dest")


def test_unreachable_host_gives_up_after_bounded_tries(tmp_path: Path) -> None:
    settings = StorageSettings(attempts=2, retry_backoff_s=0.01, http_timeout_s=2)
    # Port 9 (discard) is closed on loopback: connection refused, a transient error, retried twice.
    with pytest.raises(StorageError, match=r"GET http://127\.0\.0\.1:9/x/model\.json: gave up after 2 tries"):
        fetch("http://127.0.0.1:9/x", tmp_path / "dest", settings)


def test_http_is_read_only(bundle: Bundle) -> None:
    with pytest.raises(StorageError, match="read-only"):
        upload(bundle.path, "http://127.0.0.1:9/x")
