"""Open Inference Protocol v2 spoken by the real tritonclient.http against ``kubemaas serve``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from kubemaas_runtime.bundle import MODEL
from tests.runtime.serving.conftest import Server

MODEL_NAME = "digits-mlp"


@pytest.fixture
def client(mlp_server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(mlp_server.host_port)


def reference(mlp_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(mlp_dir / MODEL), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probs"], {"x": x})
    return {"logits": logits, "probs": probs}


def test_server_metadata_and_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "kubemaas",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "statistics", "model_configuration"],
    }


def test_model_metadata_has_dynamic_batch_dims(client: triton.InferenceServerClient) -> None:
    expected = {
        "name": MODEL_NAME,
        "versions": ["3"],
        "platform": "onnx_onnxv1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    meta = client.get_model_metadata(MODEL_NAME)
    assert meta.pop("parameters")["batch_axis"] == 0  # how requests are merged, and why
    assert meta == expected
    meta = client.get_model_metadata(MODEL_NAME, model_version="3")
    assert {k: v for k, v in meta.items() if k != "parameters"} == expected
    assert client.is_model_ready(MODEL_NAME)
    assert client.is_model_ready(MODEL_NAME, model_version="3")
    assert not client.is_model_ready("no-such-model")


def test_infer_with_default_client_settings_uses_binary_data(
    client: triton.InferenceServerClient, mlp_dir: Path
) -> None:
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary_data=True is the client's default
    result = client.infer(MODEL_NAME, [inp], request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == MODEL_NAME
    assert response["model_version"] == "3"
    assert [o["parameters"]["binary_data_size"] for o in response["outputs"]] == [5 * 3 * 4, 5 * 3 * 4]
    want = reference(mlp_dir, x)
    np.testing.assert_allclose(result.as_numpy("logits"), want["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probs"), want["probs"], rtol=1e-5, atol=1e-6)


def test_infer_json_with_output_selection(client: triton.InferenceServerClient, mlp_dir: Path) -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 10
    inp = triton.InferInput("x", [2, 8], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    result = client.infer(
        MODEL_NAME, [inp], model_version="3", outputs=[triton.InferRequestedOutput("probs", binary_data=False)]
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["probs"]
    assert response["outputs"][0]["shape"] == [2, 3]
    assert "id" not in response
    assert result.as_numpy("logits") is None
    np.testing.assert_allclose(result.as_numpy("probs"), reference(mlp_dir, x)["probs"], rtol=1e-5, atol=1e-6)


def test_infer_error_names_the_problem(client: triton.InferenceServerClient) -> None:
    inp = triton.InferInput("x", [1, 7], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 7), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 7\] does not match the model's \[-1, 8\]"):
        client.infer(MODEL_NAME, [inp])


def test_unknown_model_is_an_error(client: triton.InferenceServerClient) -> None:
    inp = triton.InferInput("x", [1, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 8), np.float32))
    with pytest.raises(InferenceServerException, match=r"Request for unknown model: 'resnet' is not found"):
        client.infer("resnet", [inp])
