"""Fixtures for the serving tests: models built in code, served by a real ``kubemaas serve``
process (uvicorn) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.runtime.serving import models

START_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``kubemaas serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, deadline_s: float = START_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {deadline_s}s:\n{self.logs()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model_dir: Path, log: Path, *args: str, **env: str) -> Server:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMAAS_")}
    environ.update({f"KUBEMAAS_{k.upper()}": v for k, v in env.items()})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(model_dir),
             "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, env=environ,
        )
    server = Server(process, port, log)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


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
