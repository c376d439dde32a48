"""Two real ranks (processes) on loopback with gloo, against one rank at the same global batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubemaas_runtime.bundle import CHECKPOINT, load_bundle
from kubemaas_runtime.training.launch import run_local
from kubemaas_runtime.training.recipes import get_recipe
from tests.runtime.training.training_helpers import rank_done

SOURCE_ENV = {
    "KUBEMAAS_SOURCE_NAMESPACE": "ml",
    "KUBEMAAS_SOURCE_NAME": "digits-run",
    "KUBEMAAS_SOURCE_UID": "0b1c7c1e-0000-4000-8000-000000000001",
}


def _run(tmp: Path, world: int) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    out, logs = tmp / f"out-{world}", tmp / f"logs-{world}"
    argv = ["--recipe", "digits", "--output", str(out), "--batch-size", "64", "--seed", "3"]
    done = run_local(world, argv, on_event=events.append, env=SOURCE_ENV, log_dir=logs, threads_per_rank=1)
    return {"done": done, "events": events, "out": out, "logs": logs}


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp")
    return {1: _run(tmp, 1), 2: _run(tmp, 2)}


def _state(out: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    model: dict[str, torch.Tensor] = ckpt["model"]
    return model


def test_two_ranks_end_with_bitwise_identical_parameters(runs: dict[int, dict[str, Any]]) -> None:
    logs = runs[2]["logs"]
    rank0, rank1 = rank_done(logs, 0), rank_done(logs, 1)
    assert rank0["worldSize"] == rank1["worldSize"] == 2
    assert rank0["step"] == rank1["step"] > 0
    assert rank0["paramsSha256"] == rank1["paramsSha256"]


def test_two_ranks_match_one_rank_at_the_same_global_batch(runs: dict[int, dict[str, Any]]) -> None:
    one, two = _state(runs[1]["out"]), _state(runs[2]["out"])
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4)
    steps = [[e["step"] for e in runs[w]["events"] if e["event"] == "progress"] for w in (1, 2)]
    assert steps[0] == steps[1]  # 1437 train samples // 64 = 22 steps per epoch either way
    assert runs[2]["done"]["artifact"]["metrics"]["accuracy"] == pytest.approx(
        runs[1]["done"]["artifact"]["metrics"]["accuracy"], abs=0.01
    )


def test_digits_reaches_the_accuracy_bar(runs: dict[int, dict[str, Any]]) -> None:
    metrics = runs[2]["done"]["artifact"]["metrics"]
    assert metrics["accuracy"] >= 0.95
    progress = [e for e in runs[2]["events"] if e["event"] == "progress"]
    assert [e["epoch"] for e in progress] == list(range(1, 11))
    assert progress[-1]["loss"] < progress[0]["loss"]


def test_bundle_is_valid_and_onnx_matches_torch(runs: dict[int, dict[str, Any]]) -> None:
    done, out = runs[2]["done"], runs[2]["out"]
    bundle = load_bundle(out)
    assert bundle.digest == done["artifact"]["sha256"]
    manifest = bundle.manifest
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [("logits", "FP32", [-1, 10])]
    assert manifest.labels == [str(d) for d in range(10)]
    assert manifest.metrics == done["artifact"]["metrics"]
    assert manifest.source is not None
    assert (manifest.source.namespace, manifest.source.name, manifest.source.uid) == (
        "ml", "digits-run", SOURCE_ENV["KUBEMAAS_SOURCE_UID"],
    )
    recipe = get_recipe("digits")
    model = recipe.model(recipe.params({}))
    model.load_state_dict(_state(out))
    model.eval()
    with np.load(bundle.eval_path, allow_pickle=False) as data:
        inputs, labels = data["inputs"], data["labels"]
    assert inputs.shape == (360, 64)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float((got.argmax(axis=1) == labels).mean()) == pytest.approx(manifest.metrics["accuracy"])


def test_rank0_writes_the_termination_message(runs: dict[int, dict[str, Any]]) -> None:
    logs = runs[2]["logs"]
    message = json.loads((logs / "termination-0.json").read_text())
    assert message == {"artifact": runs[2]["done"]["artifact"]}
    assert len((logs / "termination-0.json").read_bytes()) < 4096
    assert not (logs / "termination-1.json").exists()
