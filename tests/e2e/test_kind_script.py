"""tests/e2e/kind.sh and its endpoint checker.

The kind end-to-end itself needs a Docker engine and kind, which this machine lacks; it
runs with `make kind-e2e` where they exist. Here we check that the script parses, that
it skips cleanly (exit 0, a "skipped:" line naming what is missing) when Docker or kind
is absent, and that tests/e2e/check_endpoint.py really measures accuracy over v2: it is
run against a real `kubemaas serve` process serving a real ONNX model (a least-squares
linear classifier fitted here on the digits recipe's training split).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kubemaas_runtime.bundle import MODEL, Manifest, TensorSpec, write_manifest
from kubemaas_runtime.serving.process import ServeProcess

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "tests" / "e2e" / "kind.sh"
CHECKER = ROOT / "tests" / "e2e" / "check_endpoint.py"


def test_script_parses() -> None:
    done = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


def test_makefile_target_runs_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "kind-e2e:\n\tbash tests/e2e/kind.sh" in makefile


def _docker_engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    done = subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def test_skips_cleanly_where_docker_or_kind_is_missing() -> None:
    if _docker_engine_answers() and shutil.which("kind"):
        pytest.skip("Docker and kind are both here: run `make kind-e2e` for the real end-to-end (~20 min)")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: docker/kind not found: "), done.stdout
    assert done.stdout.count("\n") == 1  # it did nothing else


def test_skips_without_a_docker_cli(tmp_path: Path) -> None:
    """A PATH holding only what the script needs before its checks (no docker, no kind)."""
    for tool in ("dirname",):
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert (done.returncode, done.stdout) == (0, "skipped: docker/kind not found: no docker CLI on PATH\n")


# -- check_endpoint.py against a real server -------------------------------------------------


def _linear_digits_bundle(directory: Path) -> float:
    """Fit a ridge least-squares classifier on the recipe's training split, export it as ONNX
    (input `input` [-1, 64] raw pixels -> `logits` [-1, 10]), write a bundle, and return its
    held-out accuracy computed here with numpy."""
    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.2, stratify=y, random_state=0
    )
    design = np.hstack([train_x, np.ones((len(train_x), 1), np.float32)]).astype(np.float64)
    targets = np.eye(10)[train_y]
    solution = np.linalg.solve(design.T @ design + 1.0 * np.eye(65), design.T @ targets)
    weights, bias = solution[:64].astype(np.float32), solution[64].astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "b"], ["logits"])],
        "digits-linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True)
    onnx.save(model, str(directory / MODEL))
    manifest = Manifest(
        name="digits-linear",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 64])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 10])],
        labels=[str(d) for d in range(10)],
    )
    write_manifest(directory, manifest)
    predicted = np.argmax(test_x @ weights + bias, axis=1)
    return float(np.mean(predicted == test_y))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    """`kubemaas serve` on a free loopback port; yields (host:port, expected accuracy).

    It is not waited for here: check_endpoint.py's own readiness wait is part of what is tested.
    """
    bundle = tmp_path_factory.mktemp("e2e") / "bundle"
    expected = _linear_digits_bundle(bundle)
    server = ServeProcess(
        bundle, bundle.parent / "serve.log", env={"KUBEMAAS_TERMINATION_LOG": os.devnull}
    ).start()
    try:
        yield server.host_port, expected
    finally:
        server.stop()


def _check(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECKER), "--url", url, "--model", "digits-linear", "--timeout", "90", *extra],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_check_endpoint_measures_held_out_accuracy(served: tuple[str, float]) -> None:
    url, expected = served
    done = _check(url, "--min-accuracy", "0.9")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == 360  # 20 % of 1797, stratified
    assert report["requests"] == 12  # ceil(360 / 32)
    # the server's answers give the accuracy numpy computes with the same weights (one row of slack
    # for a float32 tie between two classes)
    assert abs(report["accuracy"] - expected) <= 1 / 360 + 1e-4, (report, expected)
    assert 0.9 <= expected < 1.0


@pytest.mark.slow
def test_check_endpoint_fails_below_the_minimum(served: tuple[str, float]) -> None:
    url, expected = served
    done = _check(url, "--min-accuracy", f"{min(expected + 0.01, 1.0):.4f}")
    assert done.returncode != 0
    assert "is below --min-accuracy" in done.stderr, done.stderr
