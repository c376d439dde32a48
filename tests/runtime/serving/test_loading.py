"""Loading: bundles are verified, bare graphs work, readiness waits for the warm-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from kubemaas_runtime.bundle import MODEL
from kubemaas_runtime.cli import main
from kubemaas_runtime.serving.app import ServingApp, create_app
from kubemaas_runtime.serving.model import load_model
from kubemaas_runtime.serving.settings import ServingSettings
from tests.runtime.serving import models


def test_bundle_name_version_and_checksum(tmp_path: Path) -> None:
    model = load_model(models.mlp_bundle(tmp_path / "b", name="iris"))
    assert (model.name, model.version, model.source) == ("iris", "3", "bundle")
    assert model.digest is not None
    assert load_model(tmp_path / "b", "override").name == "override"


def test_bare_onnx_is_named_after_its_directory(tmp_path: Path) -> None:
    model = load_model(models.mlp(tmp_path / "plain-mlp"))
    assert (model.name, model.version, model.source) == ("plain-mlp", "1", "onnx")
    assert [t.metadata() for t in model.inputs] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}]


def test_serve_refuses_a_tampered_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = models.mlp_bundle(tmp_path / "b")
    data = (bundle / MODEL).read_bytes()
    (bundle / MODEL).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped, same size
    assert main(["serve", "--model-dir", str(bundle), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert f"{bundle / MODEL}: sha256" in err
    assert "does not match model.json" in err


def test_serve_refuses_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["serve", "--model-dir", str(tmp_path / "empty")]) == 1
    assert f"{tmp_path / 'empty' / MODEL}: missing" in capsys.readouterr().err


def test_serve_refuses_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model-dir", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err


def test_thread_and_auth_flags_reach_the_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model-dir", str(tmp_path), "--intra-op-threads", "-1"]) == 2
    assert "intra_op_threads: Input should be greater than or equal to 0 (got -1)" in capsys.readouterr().err
    missing = tmp_path / "no-token"
    assert main(["serve", "--model-dir", str(tmp_path), "--auth-token-file", str(missing)]) == 1
    assert f"auth_token_file {str(missing)!r}" in capsys.readouterr().err


def test_not_ready_until_warm_up_but_live(tmp_path: Path) -> None:
    """In-process ASGI without the lifespan: no warm-up ran, so the server is live, not ready."""
    model = load_model(models.mlp(tmp_path / "m"))
    app = create_app(ServingSettings(model_dir=tmp_path / "m"), model)
    asyncio.run(_probe(app))


async def _probe(app: ServingApp) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        assert (await client.get("/v2/models/m/ready")).status_code == 503
        body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8}]}
        r = await client.post("/v2/models/m/infer", json=body)
        assert (r.status_code, r.json()) == (503, {"error": "model 'm' is not ready yet"})
