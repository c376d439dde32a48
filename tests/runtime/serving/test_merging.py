"""Requests are merged only along a declared batch axis, and a merged answer never differs from
the same request sent alone: graphs whose leading axis is not "independent rows" are hammered
by concurrent clients through a real server, and every answer is compared with its solo answer
from a direct ONNX Runtime session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from kubemaas_runtime.bundle import MANIFEST, MODEL, BundleError, Manifest, TensorSpec, write_manifest
from kubemaas_runtime.serving.batching import Batcher, BatchResult
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.model import load_model
from tests.runtime.serving import models
from tests.runtime.serving.conftest import start_server
from tests.runtime.serving.test_server_batching import metric

CLIENTS = 6
REQUESTS = 20


def solo(model_dir: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_dir / MODEL), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def hammer(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """``CLIENTS`` pooled clients sending ``bodies`` round-robin, all at once."""

    def client(k: int) -> list[tuple[int, httpx.Response]]:
        with httpx.Client(timeout=60) as c:
            return [(i, c.post(url, json=bodies[i])) for i in range(k, len(bodies), CLIENTS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [pair for part in pool.map(client, range(CLIENTS)) for pair in part]
    return [r for _, r in sorted(answers, key=lambda pair: pair[0])]


def fp32(name: str, x: np.ndarray) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}


def test_a_ranker_without_a_declared_batch_axis_answers_every_client_alone(tmp_path: Path) -> None:
    model_dir = models.ranker(tmp_path / "ranker")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(CLIENTS * REQUESTS)]
    server = start_server(model_dir, tmp_path / "ranker.log", max_batch_size="32", max_delay_ms="20")
    try:
        meta = httpx.get(f"{server.url}/v2/models/ranker").json()
        assert meta["parameters"]["batch_axis"] is None
        assert "not merged: a bare model.onnx declares no batch axis" in meta["parameters"]["batching"]
        answers = hammer(f"{server.url}/v2/models/ranker/infer", [{"inputs": [fp32("x", x)]} for x in xs])
        assert "requests are not merged" in server.logs()
    finally:
        assert server.stop() == 0
    for x, r in zip(xs, answers, strict=True):
        assert r.status_code == 200, r.text
        got = {o["name"]: o["data"] for o in r.json()["outputs"]}
        want = solo(model_dir, {"x": x})
        assert got["order"] == want["order"].tolist()  # indices into this client's own 3 rows
        np.testing.assert_allclose(got["top"], want["top"], rtol=1e-6)


def test_max_batch_size_alone_never_merges_a_bundle_without_batch_axis(tmp_path: Path) -> None:
    bundle = models.mlp_bundle(tmp_path / "mlp", batch_axis=None)
    model = load_model(bundle)
    assert model.batching.axis is None
    assert "model.json declares no batchAxis" in model.batching.reason
    assert load_model(bundle, batch_axis=0).batching.axis == 0  # an explicit setting declares it


def test_a_schema_1_manifest_is_read_and_served_unmerged(tmp_path: Path) -> None:
    bundle = models.mlp_bundle(tmp_path / "mlp", batch_axis=0)
    manifest = json.loads((bundle / MANIFEST).read_text())
    old = {k: v for k, v in manifest.items() if k not in ("schemaVersion", "batchAxis")}
    old["files"] = {rel: entry["sha256"] for rel, entry in manifest["files"].items()}
    (bundle / MANIFEST).write_text(json.dumps(old))
    assert load_model(bundle).batching.axis is None


def test_a_batch_axis_setting_must_fit_the_graph(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"batch_axis setting 1: 'x' has shape \[-1, 4\]"):
        load_model(models.ranker(tmp_path / "r"), batch_axis=1)
    bundle = models.mlp_bundle(tmp_path / "mlp", batch_axis=0)
    with pytest.raises(BundleError, match=r"batch_axis setting 1 contradicts model\.json batchAxis 0"):
        load_model(bundle, batch_axis=1)


def test_manifest_batch_axis_merges_and_every_answer_equals_its_solo_answer(tmp_path: Path) -> None:
    bundle = models.mlp_bundle(tmp_path / "mlp", batch_axis=0)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(CLIENTS * REQUESTS)]
    server = start_server(bundle, tmp_path / "mlp.log", max_delay_ms="20", auto_batch_size="false")
    try:
        meta = httpx.get(f"{server.url}/v2/models/digits-mlp").json()["parameters"]
        assert (meta["batch_axis"], meta["max_batch_rows"]) == (0, 32)
        assert "declared by model.json batchAxis" in meta["batching"]
        answers = hammer(f"{server.url}/v2/models/digits-mlp/infer", [{"inputs": [fp32("x", x)]} for x in xs])
        calls = metric(server, "kubemaas_batch_size_count")
    finally:
        assert server.stop() == 0
    for x, r in zip(xs, answers, strict=True):
        assert r.status_code == 200, r.text
        got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
        np.testing.assert_allclose(got["probs"], solo(bundle, {"x": x})["probs"], rtol=1e-5, atol=1e-6)
    assert calls < len(xs) + 1  # merged: fewer ONNX Runtime calls than requests (+ warm-up)


def _merge_all(runner: Callable[[dict[str, np.ndarray]], Any], parts: list[dict[str, np.ndarray]]) -> list[Any]:
    """Submit ``parts`` together to a batcher that surely merges them (long max delay)."""

    async def main() -> list[Any]:
        reruns: list[str] = []
        batcher = Batcher(runner, batch_axis=0, max_batch_size=64, max_delay_ms=200, on_rerun=reruns.append)
        await batcher.start()
        try:
            # Every submit runs before the worker wakes up, so all land in one merged run.
            results = await asyncio.gather(
                *(batcher.submit(p, len(next(iter(p.values())))) for p in parts), return_exceptions=True
            )
        finally:
            await batcher.stop()
        return [*results, reruns, batcher.max_rows]

    return asyncio.run(main())


def test_outputs_without_the_merged_rows_are_rerun_per_request_and_merging_stops(tmp_path: Path) -> None:
    model = load_model(models.pairs(tmp_path / "pairs"), batch_axis=0)
    parts = [{"x": np.arange(4 * n, dtype=np.float32).reshape(n, 4) + 100 * n} for n in (1, 2, 3)]
    *results, reruns, max_rows = _merge_all(model.run, parts)
    for part, result in zip(parts, results, strict=True):
        assert isinstance(result, BatchResult), result
        np.testing.assert_array_equal(result.outputs["y"], part["x"].reshape(-1, 2))
    assert (reruns, max_rows) == (["mismatch"], 1)


def test_one_bad_id_fails_only_its_own_request_with_400(tmp_path: Path) -> None:
    model = load_model(models.embedding(tmp_path / "emb"), batch_axis=0)
    parts = [{"ids": np.array(ids, np.int64)} for ids in ([1, 2], [3], [4, 12], [9, 0, 5])]
    *results, reruns, max_rows = _merge_all(model.run, parts)
    assert isinstance(results[2], InvalidInput)
    assert results[2].status_code == 400
    assert "idx=12 must be within the inclusive range [-10,9]" in results[2].message
    for i in (0, 1, 3):
        result = results[i]
        assert isinstance(result, BatchResult), result
        np.testing.assert_array_equal(result.outputs["emb"], solo(tmp_path / "emb", parts[i])["emb"])
    assert (reruns, max_rows) == (["failed"], 64)  # a bad input says nothing about the model


def test_hammered_embedding_with_bad_ids_fails_only_the_culprits(tmp_path: Path) -> None:
    model_dir = models.embedding(tmp_path / "emb")
    rng = np.random.default_rng(5)
    ids = [rng.integers(0, 10, int(rng.integers(1, 4))).tolist() for _ in range(CLIENTS * REQUESTS)]
    for i in range(0, len(ids), 10):
        ids[i] = [*ids[i], 10 + i]  # one out-of-range id among good ones
    server = start_server(model_dir, tmp_path / "emb.log", "--batch-axis", "0", max_delay_ms="20")
    try:
        bodies = [{"inputs": [{"name": "ids", "datatype": "INT64", "shape": [len(x)], "data": x}]} for x in ids]
        answers = hammer(f"{server.url}/v2/models/emb/infer", bodies)
    finally:
        assert server.stop() == 0
    for i, (x, r) in enumerate(zip(ids, answers, strict=True)):
        if i % 10 == 0:
            assert r.status_code == 400, r.text
            assert f"idx={10 + i} must be within" in r.json()["error"]
            continue
        assert r.status_code == 200, r.text
        want = solo(model_dir, {"ids": np.array(x, np.int64)})["emb"]
        assert r.json()["outputs"][0]["data"] == want.ravel().tolist()


def test_hammered_pairs_model_with_a_declared_axis_answers_every_request_right(tmp_path: Path) -> None:
    model_dir = models.pairs(tmp_path / "pairs")
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(CLIENTS * REQUESTS)]
    server = start_server(model_dir, tmp_path / "pairs.log", "--batch-axis", "0", max_delay_ms="20")
    try:
        answers = hammer(f"{server.url}/v2/models/pairs/infer", [{"inputs": [fp32("x", x)]} for x in xs])
    finally:
        assert server.stop() == 0
    for x, r in zip(xs, answers, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [2 * len(x), 2]
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], x.ravel(), rtol=1e-6)


def test_manifest_written_by_training_declares_batch_axis(tmp_path: Path) -> None:
    """The manifest keeps the declaration through a write/read round trip."""
    models.mlp(tmp_path / "m")
    manifest = Manifest(
        name="m", batchAxis=0, inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 8])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 3]),
                 TensorSpec(name="probs", datatype="FP32", shape=[-1, 3])],
    )
    write_manifest(tmp_path / "m", manifest)
    assert json.loads((tmp_path / "m" / MANIFEST).read_text())["batchAxis"] == 0
    assert load_model(tmp_path / "m").batching.axis == 0


def test_run_errors_are_classified_by_whose_fault_they_are(tmp_path: Path) -> None:
    """A signature-valid input a kernel cannot take is 400 (FAIL from a node); an allocation
    failure with the same code is 500."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from kubemaas_runtime.serving.model import input_at_fault

    model = load_model(models.pairs(tmp_path / "pairs", width=-1))  # x[n, m] reshaped to [-1, 2]
    with pytest.raises(InvalidInput, match="while running Reshape node"):
        model.run({"x": np.zeros((1, 3), np.float32)})  # 3 elements do not make pairs
    assert not input_at_fault(Fail("[ONNXRuntimeError] : 1 : FAIL : Failed to allocate memory for requested buffer"))
