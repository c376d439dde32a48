"""KServe v1: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from kubemaas_runtime.bundle import MODEL
from tests.runtime.serving.conftest import Server


def test_model_status(mlp_server: Server) -> None:
    r = httpx.get(mlp_server.url + "/v1/models/digits-mlp")
    assert (r.status_code, r.json()) == (200, {"name": "digits-mlp", "ready": True})
    assert httpx.get(mlp_server.url + "/v1/models/other").status_code == 404


def test_predict_matches_onnx_runtime(mlp_server: Server, mlp_dir: Path) -> None:
    x = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)
    r = httpx.post(mlp_server.url + "/v1/models/digits-mlp:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    assert float(r.headers["kubemaas-compute-time-ms"]) > 0
    predictions = r.json()["predictions"]
    session = ort.InferenceSession(str(mlp_dir / MODEL), providers=["CPUExecutionProvider"])
    logits, probs = session.run(None, {"x": x})
    assert len(predictions) == 3
    np.testing.assert_allclose([p["logits"] for p in predictions], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([p["probs"] for p in predictions], probs, rtol=1e-5, atol=1e-6)


def test_predict_rejects_bad_instances(mlp_server: Server) -> None:
    url = mlp_server.url + "/v1/models/digits-mlp:predict"
    r = httpx.post(url, json={"rows": [[0.0] * 8]})
    assert r.status_code == 400
    assert r.json() == {"error": 'request body must be {"instances": [...]} with at least one instance'}
    r = httpx.post(url, json={"instances": [[0.0] * 5]})
    assert r.status_code == 400
    assert r.json() == {"error": "instances: each instance has shape [5], model input 'x' needs [8]"}
    r = httpx.post(url, json={"instances": [[0.0] * 8]}, headers={}, params={})
    assert r.status_code == 200
