"""Bad input gets a 4xx with ``{"error": ...}`` naming the field and the value (raw HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.runtime.serving.conftest import Server

INFER = "/v2/models/digits-mlp/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8, **overrides}]}


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


def test_malformed_json(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert "request body is not valid JSON" in error_of(r, 400)


def test_body_must_be_an_object_with_inputs(mlp_server: Server) -> None:
    assert "must be a JSON object, got list" in error_of(httpx.post(mlp_server.url + INFER, json=[1, 2]), 400)
    assert "non-empty list of tensors" in error_of(httpx.post(mlp_server.url + INFER, json={"inputs": []}), 400)


def test_wrong_shape(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(shape=[1, 9]))
    assert error_of(r, 400) == "input 'x'.shape [1, 9] does not match the model's [-1, 8] for 'x'"


def test_data_that_does_not_fill_the_shape(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(shape=[2, 8]))
    assert error_of(r, 400) == "input 'x'.data has 8 elements but shape [2, 8] needs 16"


def test_wrong_datatype(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(datatype="INT64", data=[1] * 8))
    assert error_of(r, 400) == "input 'x': datatype INT64 does not match the model's FP32"
    r = httpx.post(mlp_server.url + INFER, json=tensor(datatype="COMPLEX64"))
    assert error_of(r, 400) == "input 'x': datatype 'COMPLEX64' is not a v2 datatype this server supports"


def test_data_that_is_not_numbers(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(data=["a"] * 8))
    assert "input 'x'.data cannot be read as FP32" in error_of(r, 400)


def test_unknown_input_name(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(name="pixels"))
    assert error_of(r, 400) == "inputs[0].name 'pixels' is not an input of model 'digits-mlp'; inputs are ['x']"


def test_unknown_output_name(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json={**tensor(), "outputs": [{"name": "embedding"}]})
    assert "outputs[0].name 'embedding' is not an output of model 'digits-mlp'" in error_of(r, 400)


def test_unknown_model_and_version(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + "/v2/models/resnet/infer", json=tensor())
    # Triton's wording: its client examples check the prefix
    assert error_of(r, 404) == "Request for unknown model: 'resnet' is not found; this server serves 'digits-mlp'"
    r = httpx.post(mlp_server.url + "/v2/models/digits-mlp/versions/9/infer", json=tensor())
    assert error_of(r, 404) == "Request for unknown model: 'digits-mlp' version 9 is not found; it has version 3"
    assert error_of(httpx.get(mlp_server.url + "/v2/models/resnet"), 404).startswith("Request for unknown model:")


def test_unknown_route_and_method(mlp_server: Server) -> None:
    assert error_of(httpx.get(mlp_server.url + "/v3/nothing"), 404) == "Not Found"
    assert error_of(httpx.get(mlp_server.url + INFER), 405) == "Method Not Allowed"


def test_binary_header_length_outside_the_body(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert error_of(r, 400) == "Inference-Header-Content-Length 99 is outside the body's 2 bytes"


def test_binary_size_that_does_not_match_the_shape(mlp_server: Server) -> None:
    header = b'{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
    r = httpx.post(
        mlp_server.url + INFER,
        content=header + bytes(16),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert "binary_data_size is 16 bytes but FP32 shape [1, 8] needs 32" in error_of(r, 400)


def test_oversize_body_with_content_length(mlp_server: Server) -> None:
    # mlp_server runs with KUBEMAAS_MAX_BODY_BYTES=65536
    r = httpx.post(mlp_server.url + INFER, content=b"x" * 70_000)
    assert error_of(r, 413) == "request body of 70000 bytes exceeds max_body_bytes=65536"


def test_oversize_chunked_body(mlp_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    r = httpx.post(mlp_server.url + INFER, content=chunks())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert error_of(r, 413) == "request body exceeds max_body_bytes=65536"


@pytest.mark.parametrize("route", ["/v2/health/live", "/v2/health/ready"])
def test_server_stays_healthy_after_bad_requests(mlp_server: Server, route: str) -> None:
    assert httpx.get(mlp_server.url + route).status_code == 200
