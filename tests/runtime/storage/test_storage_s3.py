"""s3:// through boto3 against moto's server mode.

moto stands in for S3/MinIO (neither can run here): it is a real HTTP S3 emulator on
loopback, so boto3 signs and sends real requests to the endpoint from ``KUBEMAAS_S3_ENDPOINT``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kubemaas_runtime.bundle import MODEL, Bundle
from kubemaas_runtime.storage import StorageError, fetch, upload


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
