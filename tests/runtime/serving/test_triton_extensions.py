"""The calls Triton's own client examples make, through the real tritonclient.http: statistics,
model configuration, the unknown-model wording, gzip/deflate bodies both ways, and refusal of
the sequence/priority/timeout parameters this server does not implement."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.runtime.serving.conftest import Server
from tests.runtime.serving.test_bad_requests import INFER, error_of, tensor
from tests.runtime.serving.test_v2_tritonclient import MODEL_NAME, reference


@pytest.fixture
def client(mlp_server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(mlp_server.host_port)


def _input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_statistics_count_successes_failures_and_durations(client: triton.InferenceServerClient) -> None:
    before = client.get_inference_statistics(MODEL_NAME)["model_stats"][0]
    x = np.ones((2, 8), np.float32)
    client.infer(MODEL_NAME, [_input(x)])
    with pytest.raises(InferenceServerException):
        client.infer(MODEL_NAME, [_input(np.ones((1, 8), np.float32))], outputs=[triton.InferRequestedOutput("nope")])
    stats = client.get_inference_statistics(MODEL_NAME)
    (entry,) = stats["model_stats"]
    assert (entry["name"], entry["version"]) == (MODEL_NAME, "3")
    assert entry["inference_count"] - before["inference_count"] == 2  # rows, as Triton counts them
    inference = entry["inference_stats"]
    assert inference["success"]["count"] - before["inference_stats"]["success"]["count"] == 1
    assert inference["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[key]["count"] >= inference["success"]["count"]
    assert sum(b["compute_infer"]["count"] for b in entry["batch_stats"]) == entry["execution_count"]
    assert client.get_inference_statistics() == client.get_inference_statistics(MODEL_NAME, "3")


def test_model_config_derived_from_the_signature(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL_NAME)
    assert (config["name"], config["platform"], config["backend"]) == (MODEL_NAME, "onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] >= 1  # batch axis 0 declared: dims leave it out, as Triton's do
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [8]}]
    assert config["output"] == [
        {"name": "logits", "data_type": "TYPE_FP32", "dims": [3]},
        {"name": "probs", "data_type": "TYPE_FP32", "dims": [3]},
    ]
    assert config["parameters"]["batch_axis"] == {"string_value": "0"}


def test_unknown_model_errors_begin_as_tritons_do(client: triton.InferenceServerClient) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.get_model_metadata("resnet"),
        lambda: client.get_model_config("resnet"),
        lambda: client.get_inference_statistics("resnet"),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert str(caught.value.message()).startswith("Request for unknown model: 'resnet' is not found")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
def test_compressed_requests_and_responses(
    client: triton.InferenceServerClient, mlp_dir: Path, algorithm: str, binary: bool
) -> None:
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    outputs = [triton.InferRequestedOutput("probs", binary_data=binary)]
    result = client.infer(
        MODEL_NAME, [_input(x, binary)], outputs=outputs,
        request_compression_algorithm=algorithm, response_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(result.as_numpy("probs"), reference(mlp_dir, x)["probs"], rtol=1e-5, atol=1e-6)


def test_raw_deflate_bodies_are_read_too(mlp_server: Server) -> None:
    body = httpx.Request("POST", "/", json=tensor()).read()
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = c.compress(body) + c.flush()
    r = httpx.post(mlp_server.url + INFER, content=raw, headers={"content-encoding": "deflate"})
    assert r.status_code == 200, r.text


def test_unsupported_content_encoding_gets_415(mlp_server: Server) -> None:
    body = httpx.Request("POST", "/", json=tensor()).read()
    r = httpx.post(mlp_server.url + INFER, content=body, headers={"content-encoding": "br"})
    assert error_of(r, 415) == "Content-Encoding 'br' is not supported; use gzip, deflate or none"


def test_a_compression_bomb_stops_at_the_body_limit(mlp_server: Server) -> None:
    # mlp_server runs with max_body_bytes=65536: 10 MB of spaces gzip to about 10 kB.
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 65536
    r = httpx.post(mlp_server.url + INFER, content=bomb, headers={"content-encoding": "gzip"})
    assert error_of(r, 413) == "request body decodes (gzip) to more than max_body_bytes=65536"


def test_large_answers_are_compressed_when_asked_and_small_ones_are_not(tmp_path: Path) -> None:
    from tests.runtime.serving import models
    from tests.runtime.serving.conftest import start_server

    server = start_server(models.log(tmp_path / "log"), tmp_path / "log.log", compress_min_bytes="1024")
    try:
        big = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000], "data": [1.0] * 1000}]}
        small = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 1.0]}]}
        url = f"{server.url}/v2/models/log/infer"
        r = httpx.post(url, json=big, headers={"accept-encoding": "gzip"})
        assert (r.status_code, r.headers["content-encoding"]) == (200, "gzip")
        assert r.json()["outputs"][0]["data"] == [0.0] * 1000  # httpx decoded it
        assert int(r.headers["content-length"]) < 1000  # the whole answer is about 8 kB plain
        r = httpx.post(url, json=small, headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers
        r = httpx.post(url, json=big, headers={"accept-encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in r.headers
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        # tritonclient sends all three once a sequence_id is set
        ({"sequence_id": 7, "sequence_start": True}, "['sequence_id', 'sequence_start', 'sequence_end']"),
        ({"priority": 2}, "['priority']"),
        ({"timeout": 1000}, "['timeout']"),
    ],
)
def test_parameters_that_change_a_requests_meaning_are_refused(
    client: triton.InferenceServerClient, kwargs: dict[str, object], names: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL_NAME, [_input(np.ones((1, 8), np.float32))], **kwargs)
    assert caught.value.status() == "400"
    assert f"request parameters {names} are not supported" in str(caught.value.message())


def test_routine_parameters_are_still_accepted(mlp_server: Server) -> None:
    body = {**tensor(), "parameters": {"binary_data_output": False, "content_type": "np"}}
    assert httpx.post(mlp_server.url + INFER, json=body).status_code == 200


def test_server_metadata_lists_only_implemented_extensions(mlp_server: Server) -> None:
    meta = httpx.get(mlp_server.url + "/v2").json()
    assert meta["extensions"] == ["binary_tensor_data", "statistics", "model_configuration"]
    assert httpx.get(mlp_server.url + "/v2/models/digits-mlp/stats").status_code == 200
    assert httpx.get(mlp_server.url + "/v2/models/digits-mlp/config").status_code == 200

