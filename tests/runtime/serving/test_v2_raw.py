"""v2 infer over raw HTTP: nested data, whole JSON payloads, the binary extension by hand."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from kubemaas_runtime.bundle import MODEL
from tests.runtime.serving.conftest import Server

INFER = "/v2/models/digits-mlp/infer"


def direct(mlp_dir: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(mlp_dir / MODEL), providers=["CPUExecutionProvider"])
    return list(session.run(["logits", "probs"], {"x": x}))


def test_nested_data_gives_the_same_answer_as_flat(mlp_server: Server, mlp_dir: Path) -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 8
    answers = []
    for data in (x.tolist(), x.ravel().tolist()):
        body = {"id": "n1", "inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": data}],
                "outputs": [{"name": "logits"}]}
        r = httpx.post(mlp_server.url + INFER, json=body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        answers.append(r.json())
    assert answers[0] == answers[1]
    doc = answers[0]
    assert {k: v for k, v in doc.items() if k != "outputs"} == {"model_name": "digits-mlp", "model_version": "3", "id": "n1"}
    (out,) = doc["outputs"]
    assert {k: v for k, v in out.items() if k != "data"} == {"name": "logits", "datatype": "FP32", "shape": [2, 3]}
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), direct(mlp_dir, x)[0], rtol=1e-5, atol=1e-5)


def test_binary_request_with_mixed_binary_and_json_outputs(mlp_server: Server, mlp_dir: Path) -> None:
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    header = json.dumps({
        "inputs": [{"name": "x", "shape": [3, 8], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "probs", "parameters": {"binary_data": True}}, {"name": "logits"}],
    }).encode()
    r = httpx.post(
        mlp_server.url + INFER, content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    json_len = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:json_len])
    probs_meta, logits_meta = doc["outputs"]
    assert probs_meta == {"name": "probs", "datatype": "FP32", "shape": [3, 3], "parameters": {"binary_data_size": 36}}
    assert len(r.content) == json_len + 36
    logits, probs = direct(mlp_dir, x)
    np.testing.assert_allclose(np.frombuffer(r.content[json_len:], np.float32).reshape(3, 3), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(logits_meta["data"]).reshape(3, 3), logits, rtol=1e-5, atol=1e-5)
