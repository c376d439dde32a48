"""Every v2 datatype ONNX Runtime supports, round-tripped through a bare model.onnx
(signature read from the graph), as binary tensors and as JSON."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.runtime.serving.conftest import Server
from tests.runtime.serving.models import DTYPES


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([["a", "bc"], ["", "héllo"], ["x", "yz"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True], [True, True]])
    dtype = triton.triton_to_np_dtype(datatype)
    return (np.arange(6).reshape(3, 2) * 3 + 1).astype(dtype)


def test_bare_model_metadata_comes_from_the_graph(types_server: Server) -> None:
    meta = httpx.get(f"{types_server.url}/v2/models/types").json()
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["versions"] == ["1"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {f"in_{t.lower()}": t for t in DTYPES}
    assert all(i["shape"] == [-1, 2] for i in meta["inputs"] + meta["outputs"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips(types_server: Server, binary: bool) -> None:
    client = triton.InferenceServerClient(types_server.host_port)
    inputs, outputs = [], []
    for datatype in DTYPES:
        t = datatype.lower()
        inp = triton.InferInput(f"in_{t}", [3, 2], datatype)
        inp.set_data_from_numpy(sample(datatype), binary_data=binary)
        inputs.append(inp)
        outputs.append(triton.InferRequestedOutput(f"out_{t}", binary_data=binary))
    result = client.infer("types", inputs, outputs=outputs)
    for datatype in DTYPES:
        got = result.as_numpy(f"out_{datatype.lower()}")
        want = sample(datatype)
        if datatype == "BYTES":
            got = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(got)
        assert got is not None
        assert got.shape == want.shape, datatype
        assert got.tolist() == want.tolist(), datatype
