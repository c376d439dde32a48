"""Fixtures for the serving tests: models built in code, served by a real ``kubemaas serve``
process (uvicorn) on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemaas_runtime.serving.process import ServeProcess, free_port
from tests.runtime.serving import models

Server = ServeProcess
__all__ = ["Server", "free_port", "start_server"]


def start_server(model_dir: Path, log: Path, *args: str, **env: str) -> Server:
    """A ready ``kubemaas serve`` with ``KUBEMAAS_<KEY>`` settings from ``env`` (and nothing else)."""
    server = ServeProcess(model_dir, log, args, {f"KUBEMAAS_{k.upper()}": v for k, v in env.items()})
    return server.__enter__()


@pytest.fixture(scope="session")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.mlp_bundle(tmp_path_factory.mktemp("mlp-bundle"))


@pytest.fixture(scope="session")
def types_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.identity_all_types(tmp_path_factory.mktemp("all-types"))


@pytest.fixture(scope="session")
def slow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.slow(tmp_path_factory.mktemp("slow"))


@pytest.fixture(scope="session")
def mlp_server(mlp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundle MLP with the default settings (batching on, auth off), small body limit."""
    server = start_server(mlp_dir, tmp_path_factory.mktemp("logs") / "mlp.log", max_body_bytes="65536")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def types_server(types_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A bare model.onnx with one identity per v2 datatype."""
    server = start_server(types_dir, tmp_path_factory.mktemp("logs") / "types.log", "--name", "types")
    yield server
    server.stop()
