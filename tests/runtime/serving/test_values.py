"""Values on the wire: non-finite floats survive JSON both ways (as Triton writes them), values
outside a datatype's range and fields of the wrong type get a 400 naming them, and declared
shapes are checked against the body before anything is allocated."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.runtime.serving import models
from tests.runtime.serving.conftest import Server, start_server
from tests.runtime.serving.test_bad_requests import INFER, error_of, tensor


@pytest.fixture(scope="module")
def log_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("m")
    server = start_server(models.log(directory / "log"), directory / "log.log")
    yield server
    server.stop()


def test_nan_and_infinities_round_trip_as_triton_writes_them(log_server: Server) -> None:
    body = '{"inputs":[{"name":"x","datatype":"FP32","shape":[4],"data":[-1.0,0.0,NaN,Infinity]}]}'
    r = httpx.post(f"{log_server.url}/v2/models/log/infer", content=body)
    assert r.status_code == 200, r.text
    assert b'"data":[NaN,-Infinity,NaN,Infinity]' in r.content
    data = json.loads(r.content)["outputs"][0]["data"]  # Python's json reads the tokens back
    assert [math.isnan(data[0]), data[1], math.isnan(data[2]), data[3]] == [True, -math.inf, True, math.inf]


def test_tritonclient_json_path_round_trips_non_finite_values(log_server: Server) -> None:
    client = triton.InferenceServerClient(log_server.host_port)
    inp = triton.InferInput("x", [3], "FP32")
    inp.set_data_from_numpy(np.array([-1.0, 0.0, math.e], np.float32), binary_data=False)
    out = triton.InferRequestedOutput("y", binary_data=False)
    y = client.infer("log", [inp], outputs=[out]).as_numpy("y")
    assert y is not None
    assert [bool(np.isnan(y[0])), float(y[1])] == [True, -math.inf]
    assert y[2] == pytest.approx(1.0)


def test_v1_answers_non_finite_values_as_tokens(log_server: Server) -> None:
    r = httpx.post(f"{log_server.url}/v1/models/log:predict", json={"instances": [-1.0, 0.0, 1.0]})
    assert (r.status_code, r.content) == (200, b'{"predictions":[NaN,-Infinity,0.0]}')


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("UINT8", -1, "input 'in_uint8'.data: value -1 is out of range for UINT8 [0, 255]"),
        ("UINT8", 256, "input 'in_uint8'.data: value 256 is out of range for UINT8 [0, 255]"),
        ("INT8", 128, "input 'in_int8'.data: value 128 is out of range for INT8 [-128, 127]"),
        ("UINT64", -1, "input 'in_uint64'.data: value -1 is out of range for UINT64 [0, 18446744073709551615]"),
        ("INT64", 2**63, "input 'in_int64'.data: value 9223372036854775808 is out of range for INT64 "
                         "[-9223372036854775808, 9223372036854775807]"),
        ("BOOL", 2, "input 'in_bool'.data: value 2 is out of range for BOOL [0, 1]"),
        ("FP16", 70000.0, "input 'in_fp16'.data: value 70000.0 is out of range for FP16 [-65504.0, 65504.0]"),
    ],
)
def test_values_outside_the_datatypes_range_get_400(
    types_server: Server, datatype: str, value: Any, message: str
) -> None:
    name = f"in_{datatype.lower()}"
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": [1, 2], "data": [0, value]}]}
    r = httpx.post(f"{types_server.url}/v2/models/types/infer", json=body)
    assert error_of(r, 400) == message


def test_v1_values_outside_the_range_get_400(tmp_path: Path) -> None:
    server = start_server(models.embedding(tmp_path / "emb"), tmp_path / "emb.log")
    try:
        r = httpx.post(f"{server.url}/v1/models/emb:predict", json={"instances": [1, 2**63]})
        assert error_of(r, 400) == (
            "instances: value 9223372036854775808 is out of range for INT64 "
            "[-9223372036854775808, 9223372036854775807]"
        )
    finally:
        assert server.stop() == 0


WRONG_TYPES: list[Any] = [["x"], {"a": 1}, 3, None, True]


@pytest.mark.parametrize("bad", WRONG_TYPES, ids=repr)
def test_a_field_of_the_wrong_type_gets_400_naming_it(mlp_server: Server, bad: Any) -> None:
    cases = {
        "outputs[0].name": {**tensor(), "outputs": [{"name": bad}]},
        "outputs[0].parameters": {**tensor(), "outputs": [{"name": "probs", "parameters": bad}]},
        "outputs[0]": {**tensor(), "outputs": [bad]},
        "datatype": tensor(datatype=bad),
        "inputs[0].name": tensor(name=bad),
        "shape": tensor(shape=bad),
        "input 'x'.parameters": tensor(parameters=bad),
        "parameters": {**tensor(), "parameters": bad},
        "'id'": {**tensor(), "id": bad},
    }
    for field, body in cases.items():
        if field in ("outputs[0].parameters", "parameters", "input 'x'.parameters") and (
            bad is None or isinstance(bad, dict)
        ):
            continue  # null means "absent" for optional fields; an object is the right type there
        if field == "'id'" and bad is None:
            continue  # null means "absent" for optional fields; an object is the right type there
        r = httpx.post(mlp_server.url + INFER, json=body)
        assert field in error_of(r, 400), (field, r.text)


def test_binary_flags_of_the_wrong_type_get_400(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json={**tensor(), "parameters": {"binary_data_output": "yes"}})
    assert error_of(r, 400) == "parameters.binary_data_output must be true or false, got 'yes'"


def test_a_huge_declared_bytes_shape_is_refused_before_allocation(types_server: Server) -> None:
    header = json.dumps({"inputs": [{"name": "in_bytes", "datatype": "BYTES", "shape": [2**25, 2],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    r = httpx.post(
        f"{types_server.url}/v2/models/types/infer",
        content=header + b"\x04\x00\x00\x00abcd",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert error_of(r, 400) == (
        "input 'in_bytes'.parameters.binary_data_size is 8 bytes, too few for the 67108864 BYTES elements "
        "of shape [33554432, 2] (4 bytes of length each at least)"
    )


def test_a_huge_declared_json_shape_is_refused_before_allocation(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + INFER, json=tensor(shape=[2**40, 8]))
    assert error_of(r, 400).startswith("input 'x'.shape [1099511627776, 8] needs 8796093022208 elements")
