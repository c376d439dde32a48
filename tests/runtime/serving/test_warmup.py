"""Warm-up: real rows from eval.npz where the bundle has them; a model the synthetic input cannot
run still becomes ready (with a warning); a model that cannot be served exits non-zero with its
reason in the termination message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton

from kubemaas_runtime.bundle import EVAL_SET, MODEL, Manifest, TensorSpec, write_manifest
from kubemaas_runtime.serving.process import free_port
from tests.runtime.serving import models
from tests.runtime.serving.conftest import start_server


def test_conv_that_needs_a_long_input_becomes_ready(tmp_path: Path) -> None:
    server = start_server(models.conv_mean(tmp_path / "conv"), tmp_path / "conv.log")
    try:
        x = np.ones((1, 1, 9), np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 9], "data": x.ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/conv/infer", json=body)
        assert (r.status_code, r.json()["outputs"][0]["data"]) == (200, [1.0])  # 5 taps of 0.2 on ones
        meta = httpx.get(f"{server.url}/v2/models/conv").json()
        assert meta["parameters"]["warmup"] == "warmed up with synthetic (dynamic dims = 16) input"
        assert "warm-up with synthetic (dynamic dims = 1) input failed" in server.logs()
    finally:
        assert server.stop() == 0


def test_a_model_no_synthetic_input_runs_is_ready_with_a_warning(tmp_path: Path) -> None:
    server = start_server(models.conv_mean(tmp_path / "long", kernel=20), tmp_path / "long.log")
    try:
        meta = httpx.get(f"{server.url}/v2/models/long").json()
        assert meta["parameters"]["warmup"] == "every synthetic warm-up input failed; serving without a warm-up"
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 20], "data": [1.0] * 20}]}
        r = httpx.post(f"{server.url}/v2/models/long/infer", json=body)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], [1.0], rtol=1e-6)
    finally:
        assert server.stop() == 0


def test_a_bytes_model_that_parses_its_strings_becomes_ready(tmp_path: Path) -> None:
    """Triton's simple_string stand-in, driven by tritonclient as its example does."""
    server = start_server(models.parse_strings(tmp_path / "simple_string"), tmp_path / "s.log")
    try:
        client = triton.InferenceServerClient(server.host_port)
        assert client.is_model_ready("simple_string")
        inp = triton.InferInput("in", [1, 4], "BYTES")
        inp.set_data_from_numpy(np.array([["1", "2", "30", "-4"]], dtype=object))
        result = client.infer("simple_string", [inp])
        np.testing.assert_array_equal(result.as_numpy("out"), [[2, 3, 31, -3]])
    finally:
        assert server.stop() == 0


def _embedding_bundle(directory: Path, eval_ids: list[int]) -> Path:
    models.embedding(directory)
    np.savez(directory / EVAL_SET, inputs=np.array(eval_ids, np.int64), labels=np.zeros(len(eval_ids)))
    manifest = Manifest(
        name="emb", batchAxis=0, inputs=[TensorSpec(name="ids", datatype="INT64", shape=[-1])],
        outputs=[TensorSpec(name="emb", datatype="FP32", shape=[-1, 4])],
    )
    write_manifest(directory, manifest)
    return directory


def test_warm_up_uses_the_bundles_eval_rows(tmp_path: Path) -> None:
    server = start_server(_embedding_bundle(tmp_path / "emb", [3, 4]), tmp_path / "emb.log", auto_batch_size="false")
    try:
        meta = httpx.get(f"{server.url}/v2/models/emb").json()
        assert meta["parameters"]["warmup"] == "warmed up with eval.npz input"
    finally:
        assert server.stop() == 0


def test_a_model_that_cannot_run_its_own_eval_rows_exits_1_with_a_termination_message(tmp_path: Path) -> None:
    bundle = _embedding_bundle(tmp_path / "emb", [12])  # out of the 10-row table
    termination = tmp_path / "termination-log"
    env = {"KUBEMAAS_TERMINATION_LOG": str(termination), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(bundle),
            "--host", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    message = termination.read_text()
    assert message.startswith("kubemaas serve: warm-up on the first row of eval.npz failed: the model rejected the input")
    assert "idx=12 must be within" in message


def test_a_tampered_bundle_exits_1_with_a_termination_message(tmp_path: Path) -> None:
    bundle = models.mlp_bundle(tmp_path / "b")
    data = bytearray((bundle / MODEL).read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (bundle / MODEL).write_bytes(bytes(data))
    termination = tmp_path / "termination-log"
    env = {"KUBEMAAS_TERMINATION_LOG": str(termination), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(bundle)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    message = termination.read_text()
    assert message.startswith(f"kubemaas serve: {bundle / MODEL}: sha256 ")
    assert "does not match model.json" in message
