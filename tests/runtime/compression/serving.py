"""A real ``kubemaas serve`` subprocess on a free loopback port, polled until ready."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from kubemaas_runtime.serving.process import ServeProcess


@contextmanager
def served(model_dir: Path, log: Path) -> Iterator[str]:
    """Yield the base URL of ``kubemaas serve --model-dir model_dir`` once /v2/health/ready is 200."""
    with ServeProcess(model_dir, log) as server:
        yield server.url


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
