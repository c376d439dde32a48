"""s3:// through boto3 against moto's server mode.

moto stands in for S3/MinIO (neither can run here): it is a real HTTP S3 emulator on
loopback, so boto3 signs and sends real requests to the endpoint from ``KUBEMAAS_S3_ENDPOINT``.
For slow and broken bodies, which moto cannot produce, the endpoint is the misbehaving
loopback server of webserver.py: boto3 sends it the same path-style GETs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kubemaas_runtime.bundle import MODEL, Bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.storage import StorageError, fetch, load_settings, upload
from tests.runtime.storage.webserver import CUT_BYTES, STALL_BYTES, serve


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "minio",
        "AWS_SECRET_ACCESS_KEY": "minio123",
        "AWS_DEFAULT_REGION": "us-east-1",
        "KUBEMAAS_S3_ENDPOINT": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    try:
        yield endpoint
    finally:
        server.stop()


def test_upload_then_fetch_roundtrip(s3_endpoint: str, bundle: Bundle, tmp_path: Path) -> None:
    assert upload(bundle.path, "s3://models/digits/v1") == "s3://models/digits/v1"
    keys = sorted(
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="models")["Contents"]
    )
    assert keys == [
        "digits/v1/eval.npz",
        "digits/v1/model.json",
        "digits/v1/model.onnx",
        "digits/v1/variants/int8/model.onnx",
    ]
    got = fetch("s3://models/digits/v1", tmp_path / "dest")
    assert got.digest == bundle.digest


def test_s3_checksum_mismatch(s3_endpoint: str, bundle: Bundle, tmp_path: Path) -> None:
    upload(bundle.path, "s3://models/x")
    evil = b"e" * (bundle.path / MODEL).stat().st_size  # same size, other bytes
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket="models", Key=f"x/{MODEL}", Body=evil)
    with pytest.raises(StorageError, match=r"fetch s3://models/x: .*model\.onnx: sha256 .* does not match"):
        fetch("s3://models/x", tmp_path / "dest")


def test_s3_missing_prefix_names_the_key(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"fetch s3://models/none: no model\.json there, .* \(s3://models/none/model\.json"):
        fetch("s3://models/none", tmp_path / "dest")


def test_s3_missing_bucket_is_a_clear_error(s3_endpoint: str, bundle: Bundle) -> None:
    with pytest.raises(StorageError, match=r"s3://no-such-bucket/p/.*upload of .* failed"):
        upload(bundle.path, "s3://no-such-bucket/p")


# -- endpoint settings --------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["KUBEMAAS_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_endpoint_without_a_scheme_is_one_line_naming_the_setting(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("KUBEMAAS_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "minio.kubeflow:9000")
    assert main(["fetch", "s3://models/x", str(tmp_path / "dest")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{variable}='minio.kubeflow:9000': expected an http:// or https:// URL" in err
    assert "such as http://minio.kubeflow:9000" in err


@pytest.mark.parametrize("endpoint", ["http://", "http://host:notaport", "ftp://host:21", "https://host/?x=1"])
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(StorageError, match=r"KUBEMAAS_S3_ENDPOINT=.*expected an http:// or https:// URL"):
        load_settings(s3_endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["http://minio.kubeflow:9000", "https://s3.eu-west-1.amazonaws.com", "http://[::1]:9000"])
def test_wellformed_endpoints_are_kept(endpoint: str) -> None:
    assert load_settings(s3_endpoint=endpoint).s3_endpoint == endpoint


# -- slow S3 servers: the same stall timeout and deadline as http -------------------------------


@pytest.fixture
def slow_s3(bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tests/runtime/storage/webserver.py as the S3 endpoint: ``s3://trickle/b`` trickles the bundle."""
    root = tmp_path / "www"
    upload(bundle.path, str(root / "b"))
    with serve(root) as base:
        for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
                           "KUBEMAAS_S3_ENDPOINT": base}.items():
            monkeypatch.setenv(key, value)
        yield


def test_s3_trickle_hits_the_overall_deadline(slow_s3: None, tmp_path: Path) -> None:
    settings = load_settings(stall_timeout_s=2, deadline_s=0.5, attempts=1)
    with pytest.raises(
        StorageError, match=r"s3://trickle/b/model\.json: overall deadline of 0\.5 s passed after receiving \d+ bytes"
    ):
        fetch("s3://trickle/b", tmp_path / "dest", settings)


def test_s3_stall_hits_the_stall_timeout(slow_s3: None, tmp_path: Path) -> None:
    settings = load_settings(stall_timeout_s=0.3, deadline_s=30, attempts=1)
    with pytest.raises(StorageError, match=rf"s3://stall/b/model\.json: stalled: no byte for 0\.3 s after receiving {STALL_BYTES} bytes"):
        fetch("s3://stall/b", tmp_path / "dest", settings)


def test_s3_cut_body_is_truncated(slow_s3: None, tmp_path: Path) -> None:
    size = (tmp_path / "www" / "b" / "model.json").stat().st_size
    with pytest.raises(StorageError, match=rf"truncated: expected {size} bytes, received {size - CUT_BYTES}"):
        fetch("s3://cut/b", tmp_path / "dest", load_settings(attempts=1))
