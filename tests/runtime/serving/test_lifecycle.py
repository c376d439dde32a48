"""Backpressure, graceful drain and readiness of a real ``kubemaas serve`` process."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.runtime.serving.conftest import start_server

ROWS = np.full((4, 1024), 0.1, np.float32)
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 1024], "data": ROWS.ravel().tolist()}]}
"""Four rows: tens of milliseconds per request on the slow model, so a burst outruns it."""


async def burst(url: str, n: int, body: Any = BODY) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        return await asyncio.gather(*(client.post(url, json=body) for _ in range(n)))


def test_overload_burst_gets_503_with_retry_after_and_server_stays_healthy(slow_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        slow_dir, tmp_path / "overload.log", "--name", "slow", max_batch_size="1", max_queue="2", retry_after_s="2"
    )
    try:
        responses = asyncio.run(burst(f"{server.url}/v2/models/slow/infer", 40))
        refused = [r for r in responses if r.status_code == 503]
        served = [r for r in responses if r.status_code == 200]
        assert len(refused) + len(served) == 40
        assert refused, "a burst of 40 against max_queue=2 must be refused in part"
        assert served, "the requests that fit in the queue are served"
        assert {r.headers["retry-after"] for r in refused} == {"2"}
        assert all("max_queue=2" in r.json()["error"] for r in refused)
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        after = httpx.post(f"{server.url}/v2/models/slow/infer", json=BODY, timeout=60)
        assert after.status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'route="/v2/models/{{name}}/infer",status="503"}} {float(len(refused))}' in metrics
    finally:
        assert server.stop() == 0


def test_sigterm_drains_in_flight_requests_and_exits_0(slow_dir: Path, tmp_path: Path) -> None:
    server = start_server(slow_dir, tmp_path / "drain.log", "--name", "slow", max_batch_size="1")
    n = 6
    # 64 rows per request, one request per model call: tens of milliseconds each, so all n are
    # surely in flight together. Binary tensors, so the client sends them at once.
    rows = np.full((64, 1024), 0.1, np.float32)
    header = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[64,1024],'
              b'"parameters":{"binary_data_size":%d}}]}' % rows.nbytes)

    async def burst_binary() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(*(
                client.post(f"{server.url}/v2/models/slow/infer", content=header + rows.tobytes(),
                            headers={"Inference-Header-Content-Length": str(len(header))})
                for _ in range(n)
            ))

    async def scenario() -> list[httpx.Response]:
        requests = asyncio.ensure_future(burst_binary())
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as probe:
            while time.monotonic() < deadline:
                text = (await probe.get(f"{server.url}/metrics")).text
                match = re.search(r"^kubemaas_inflight_requests\{[^}]*\} (\S+)$", text, re.MULTILINE)
                if match and float(match.group(1)) >= n:  # infer requests admitted, not yet answered
                    break
                await asyncio.sleep(0.005)
            else:
                pytest.fail("the requests never got in flight")
        server.popen.send_signal(signal.SIGTERM)
        return await requests

    try:
        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * n
        assert server.popen.wait(timeout=60) == 0
    finally:
        server.stop()  # only does something when the test failed before the drain
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")
    assert "draining" in server.logs()


def test_sigterm_under_steady_pooled_load_loses_no_request(mlp_dir: Path, tmp_path: Path) -> None:
    """Eight keep-alive workers send back to back; SIGTERM lands mid-stream. Every request sent
    on a pooled connection is answered, and the drain's ``Connection: close`` tells each worker
    to let go (as a load balancer stops sending to an endpoint being removed)."""
    server = start_server(mlp_dir, tmp_path / "pooled.log")
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    outcomes: dict[str, int] = {"ok": 0, "lost": 0, "closed_by_server": 0}
    lost: list[str] = []

    async def worker(client: httpx.AsyncClient, started: asyncio.Event) -> None:
        while True:
            try:
                r = await client.post(f"{server.url}/v2/models/digits-mlp/infer", json=x)
            except httpx.TransportError as exc:
                outcomes["lost"] += 1
                lost.append(repr(exc))
                return
            assert r.status_code == 200, r.text
            outcomes["ok"] += 1
            if outcomes["ok"] >= 200:
                started.set()
            if r.headers.get("connection") == "close":
                outcomes["closed_by_server"] += 1
                return

    async def scenario() -> None:
        started = asyncio.Event()
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            workers = [asyncio.ensure_future(worker(client, started)) for _ in range(8)]
            await asyncio.wait_for(started.wait(), 60)
            server.popen.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*workers), 60)

    asyncio.run(scenario())
    assert server.popen.wait(timeout=60) == 0
    assert (outcomes["lost"], lost) == (0, [])
    assert outcomes["closed_by_server"] == 8  # the drain told every pooled worker to let go
