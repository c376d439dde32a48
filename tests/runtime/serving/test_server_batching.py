"""Dynamic batching through the real server: concurrent clients with different batch sizes
each get exactly their own rows, identical to direct ONNX Runtime calls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from kubemaas_runtime.bundle import MODEL
from tests.runtime.serving import models
from tests.runtime.serving.conftest import Server, start_server


@pytest.fixture(scope="module")
def slow_server(slow_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A model that takes milliseconds per call, so concurrent requests queue up behind it;
    the cap stays at max_batch_size (no auto choice) so merging is what is tested here."""
    server = start_server(
        slow_dir, tmp_path_factory.mktemp("logs") / "slow-batching.log", "--name", "slow", "--batch-axis", "0",
        auto_batch_size="false",
    )
    yield server
    server.stop()


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_concurrent_clients_get_exactly_their_rows(slow_server: Server, slow_dir: Path) -> None:
    rng = np.random.default_rng(11)
    sizes = [1, 3, 2, 5, 1, 4, 2, 1, 3, 6, 1, 2]
    parts = [rng.standard_normal((n, 1024)).astype(np.float32) for n in sizes]
    batches_before = metric(slow_server, "kubemaas_batch_size_count")

    def call(x: np.ndarray) -> np.ndarray:
        header = (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d,1024],"parameters":{"binary_data_size":%d}}],'
            b'"parameters":{"binary_data_output":true}}' % (len(x), x.nbytes)
        )
        r = httpx.post(
            f"{slow_server.url}/v2/models/slow/infer",
            content=header + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        json_len = int(r.headers["inference-header-content-length"])
        return np.frombuffer(r.content[json_len:], dtype=np.float32).reshape(len(x), 1024)

    with ThreadPoolExecutor(len(parts)) as pool:
        answers = list(pool.map(call, parts))

    session = ort.InferenceSession(str(slow_dir / MODEL), providers=["CPUExecutionProvider"])
    for x, got in zip(parts, answers, strict=True):
        (want,) = session.run(["y"], {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    batches = metric(slow_server, "kubemaas_batch_size_count") - batches_before
    rows = metric(slow_server, "kubemaas_batch_size_sum")
    assert rows >= sum(sizes)
    # 12 requests queued behind a busy model: they were merged into fewer calls.
    assert batches < len(sizes)


def test_batching_off_runs_one_request_per_call(slow_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        slow_dir, tmp_path / "unbatched.log", "--name", "slow", "--batch-axis", "0", "--max-batch-size", "1"
    )
    try:
        x = np.ones((3, 1024), np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1024], "data": x.ravel().tolist()}]}
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60).status_code, range(4)))
        assert codes == [200] * 4
        # warm-up (1 row) + 4 requests of 3 rows, never merged
        assert metric(server, "kubemaas_batch_size_count") == 1 + 4
        assert metric(server, "kubemaas_batch_size_sum") == 1 + 4 * 3
    finally:
        assert server.stop() == 0


def test_an_input_a_kernel_rejects_gets_400_and_the_server_stays_ready(tmp_path: Path) -> None:
    """GatherElements reports an out-of-range index as ONNX Runtime's FAIL from the node: the
    input matched the signature, so the value was at fault (400), as for INVALID_ARGUMENT."""
    server = start_server(models.gather(tmp_path / "gather"), tmp_path / "gather.log", "--name", "gather")

    def body(index: int) -> dict[str, object]:
        return {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [10.0, 11.0, 12.0, 13.0]},
            {"name": "idx", "datatype": "INT64", "shape": [1, 1], "data": [index]},
        ]}

    try:
        url = f"{server.url}/v2/models/gather/infer"
        bad = httpx.post(url, json=body(7))
        assert bad.status_code == 400
        assert bad.json()["error"].startswith("the model rejected the input: ")
        assert "GatherElements op: Out of range value in index tensor" in bad.json()["error"]
        good = httpx.post(url, json=body(2))
        assert (good.status_code, good.json()["outputs"][0]["data"]) == (200, [12.0])
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    finally:
        assert server.stop() == 0
