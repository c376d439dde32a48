"""A real ``kubemaas serve`` subprocess on a free loopback port, polled until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

READY_DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(model_dir: Path, log: Path) -> Iterator[str]:
    """Yield the base URL of ``kubemaas serve --model-dir model_dir`` once /v2/health/ready is 200."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMAAS_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(model_dir),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"kubemaas serve exited {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"kubemaas serve not ready after {READY_DEADLINE_S}s:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def infer_v2(url: str, model: str, rows: np.ndarray, chunk: int = 32) -> np.ndarray:
    """The first output for every row, through ``POST /v2/models/{model}/infer`` in chunks."""
    outputs = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            body = {"id": f"rows-{i}", "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(part.shape), "data": part.reshape(-1).tolist()}
            ]}
            response = client.post(f"/v2/models/{model}/infer", json=body)
            assert response.status_code == 200, response.text
            out = response.json()["outputs"][0]
            outputs.append(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]))
    return np.concatenate(outputs)
