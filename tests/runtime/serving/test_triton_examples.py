"""The call sequences of Triton's Python HTTP client examples (``simple_http_infer_client.py``,
``simple_http_string_infer_client.py``, ``simple_http_health_metadata.py``), replayed with the
real tritonclient against ONNX stand-ins of the ``simple`` and ``simple_string`` models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto
from tritonclient.utils import InferenceServerException

from tests.runtime.serving import models
from tests.runtime.serving.conftest import Server, start_server

QUERY = {"test_1": 1, "test_2": 2}


@pytest.fixture(scope="module")
def simple_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("triton")
    server = start_server(models.simple(directory / "simple"), directory / "simple.log")
    yield server
    server.stop()


def _infer(client: httpclient.InferenceServerClient, model: str, outputs: bool, compression: str | None,
           a: np.ndarray, b: np.ndarray) -> httpclient.InferResult:
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=False)
    inputs[1].set_data_from_numpy(b, binary_data=True)
    wanted = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
              httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)] if outputs else None
    return client.infer(model, inputs, outputs=wanted, query_params=QUERY,
                        request_compression_algorithm=compression, response_compression_algorithm=compression)


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_http_infer_client_sequence(simple_server: Server, compression: str | None) -> None:
    client = httpclient.InferenceServerClient(simple_server.host_port)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), -1, np.int32)
    for outputs in (True, False):
        result = _infer(client, "simple", outputs, compression, a, b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert len(client.get_inference_statistics(model_name="simple")["model_stats"]) == 1
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, "wrong_model_name", True, compression, a, b)
    assert str(caught.value.message()).startswith("Request for unknown model")


def test_simple_http_health_metadata_sequence(simple_server: Server) -> None:
    client = httpclient.InferenceServerClient(simple_server.host_port)
    assert client.is_server_live(query_params=QUERY)
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata()["name"] == "kubemaas"  # the example expects "triton": ours differs
    assert client.get_model_metadata("simple", query_params=QUERY)["name"] == "simple"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in str(caught.value.message())


def test_simple_http_string_infer_client_sequence(tmp_path: Path) -> None:
    server = start_server(models.simple(tmp_path / "simple_string", TensorProto.STRING), tmp_path / "s.log")
    try:
        client = httpclient.InferenceServerClient(server.host_port)
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.ones((1, 16), np.int32)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "BYTES"), httpclient.InferInput("INPUT1", [1, 16], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([str(x) for x in a.ravel()], dtype=object).reshape(1, 16))
        inputs[1].set_data_from_numpy(np.array([str(x) for x in b.ravel()], dtype=object).reshape(1, 16))
        result = client.infer("simple_string", inputs)
        for name, want in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
            got = result.as_numpy(name)
            assert got is not None
            assert [int(v) for v in got.ravel()] == want.ravel().tolist()
    finally:
        assert server.stop() == 0
