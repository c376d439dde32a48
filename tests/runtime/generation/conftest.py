"""A real tiny text-generation bundle, trained once per session by two real ranks (gloo on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemaas_runtime.serving.process import ServeProcess
from kubemaas_runtime.training.launch import run_local

TINY = {
    "vocab": "512", "hidden": "64", "layers": "2", "heads": "4", "kv_heads": "2", "ff": "128",
    "seq_len": "64", "context": "1024", "max_train_windows": "512", "bf16": "false",
}
"""A model that trains in seconds; grouped-query attention (2 KV heads for 4) as most LLMs have."""


def train_tiny(output: Path, log_dir: Path, world: int = 2, **overrides: str) -> dict[str, Any]:
    """Run ``kubemaas train --recipe textgen`` on ``world`` local ranks; returns the ``done`` event and events."""
    events: list[dict[str, Any]] = []
    params = {**TINY, **overrides}
    argv = ["--recipe", "textgen", "--output", str(output), "--epochs", "3", "--batch-size", "16", "--lr", "5e-3"]
    for key, value in params.items():
        argv += ["--set", f"{key}={value}"]
    done = run_local(world, argv, on_event=events.append, log_dir=log_dir, threads_per_rank=1, timeout_s=300)
    return {"done": done, "events": events}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("textgen")
    run = train_tiny(tmp / "bundle", tmp / "logs")
    run["bundle"] = tmp / "bundle"
    run["logs"] = tmp / "logs"
    return run


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: dict[str, Any]) -> Path:
    path: Path = tiny_run["bundle"]
    return path


def metric(text: str, name: str) -> float:
    """The value of an unlabelled-but-``model`` series in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real ``kubemaas serve`` process on the tiny bundle: 8 slots."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServeProcess(tiny_bundle, log, env={"KUBEMAAS_MAX_BATCH_SIZE": "8"}) as proc:
        yield proc
