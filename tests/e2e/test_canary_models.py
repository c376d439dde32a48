"""tests/e2e/canary_models.py: the bad new versions `make e2e` rolls out as canaries.

Each is served by a real local `kubemaas serve` (the same entrypoint as a serving pod) and
sent the held-out digits rows the in-cluster load client sends: the failing version must become
Ready (its warm-up passes) and then answer every such request 400 with an error body, the slow
one must answer in the stable signature. Their use on real pods is in test_realpods.py.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubemaas_runtime.bundle import Manifest, TensorSpec, load_bundle
from kubemaas_runtime.serving.process import ServeProcess
from tests.e2e import canary_models
from tests.e2e.check_endpoint import held_out_digits

STABLE = Manifest(
    name="digits", version="1", task="classification", batchAxis=0,
    inputs=[TensorSpec(name="pixels", datatype="FP32", shape=[-1, 64])],
    outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 10])],
    labels=[str(i) for i in range(10)],
)
"""The digits training bundle's signature (the recipe exports pixels [-1, 64] -> logits [-1, 10])."""


def _infer(url: str, rows: list[list[float]]) -> tuple[int, dict[str, Any]]:
    body = {"inputs": [{"name": "pixels", "shape": [len(rows), 64], "datatype": "FP32", "data": rows}]}
    request = urllib.request.Request(f"{url}/v2/models/digits/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _rows(n: int) -> list[list[float]]:
    x, _ = held_out_digits(0.2, 0)
    rows: list[list[float]] = x[:n].tolist()
    return rows


def _serve(bundle: Path) -> ServeProcess:
    return ServeProcess(bundle, bundle.parent / f"{bundle.name}.log",
                        env={"KUBEMAAS_TERMINATION_LOG": os.devnull, "KUBEMAAS_MODEL_NAME": "digits"})


def test_bundles_keep_the_stable_signature(tmp_path: Path) -> None:
    for build in (canary_models.failing, canary_models.slow):
        manifest = load_bundle(build(tmp_path / build.__name__, STABLE).path).manifest
        assert (manifest.inputs, manifest.outputs, manifest.batch_axis, manifest.labels) == (
            STABLE.inputs, STABLE.outputs, 0, STABLE.labels)


def test_a_signature_other_than_rows_to_classes_is_refused_by_name(tmp_path: Path) -> None:
    image = STABLE.model_copy(update={"inputs": [TensorSpec(name="image", datatype="FP32", shape=[-1, 8, 8])]})
    with pytest.raises(ValueError, match="tensor 'image': expected FP32 \\[-1, n\\], got FP32 \\[-1, 8, 8\\]"):
        canary_models.failing(tmp_path / "bad", image)


@pytest.mark.slow
def test_failing_version_becomes_ready_then_answers_every_digit_400(tmp_path: Path) -> None:
    bundle = canary_models.failing(tmp_path / "failing", STABLE).path
    with _serve(bundle) as server:  # waits for /v2/health/ready: the warm-up passed
        answers = [_infer(server.url, [row]) for row in _rows(20)]
    assert [status for status, _ in answers] == [400] * 20
    assert all("rejected the input" in body["error"] for _, body in answers), answers[0]


@pytest.mark.slow
def test_slow_version_answers_in_the_stable_signature(tmp_path: Path) -> None:
    bundle = canary_models.slow(tmp_path / "slow", STABLE).path
    with _serve(bundle) as server:
        status, body = _infer(server.url, _rows(3))
    assert status == 200, body
    assert [(o["name"], o["shape"], o["datatype"]) for o in body["outputs"]] == [("logits", [3, 10], "FP32")]
