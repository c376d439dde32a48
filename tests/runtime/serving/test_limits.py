"""Limits that keep one client from hurting the others: bytes buffered across all requests,
slow bodies and heads, oversized heads, and clients that leave (counted as 499, not 500).
Raw sockets stand in for misbehaving clients."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tests.runtime.serving.conftest import Server, start_server

INFER = b"/v2/models/digits-mlp/infer"


def gauge(server: Server, name: str, labels: str = "") -> float:
    """The sum of ``name``'s samples whose labels contain ``labels``."""
    text = httpx.get(server.url + "/metrics").text
    found = re.findall(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", text, re.MULTILINE)
    return sum(float(value) for got, value in found if labels in got)


def wait_for(condition: object, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def stalled_client(server: Server, length: int, sent: int) -> socket.socket:
    """A connection that announces ``length`` body bytes and sends only ``sent`` of them."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (INFER, length, b" " * sent)
    )
    return s


def answer(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if b"\r\n\r\n" in b"".join(chunks) and b'"}' in chunks[-1]:
            break
    return b"".join(chunks)


def test_buffered_bytes_are_bounded_across_requests_and_stalled_bodies_time_out(mlp_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        mlp_dir, tmp_path / "buffered.log", max_buffered_bytes="300000", body_timeout_s="2",
    )
    try:
        admitted = [stalled_client(server, 100_000, 1000) for _ in range(3)]
        wait_for(lambda: gauge(server, "kubemaas_buffered_request_bytes") == 300_000)
        refused = [stalled_client(server, 100_000, 1000) for _ in range(2)]
        for s in refused:  # answered at once, before its body is read
            head = answer(s)
            assert head.startswith(b"HTTP/1.1 503"), head
            assert b"retry-after: 1" in head
            assert b"max_buffered_bytes=300000" in head
        assert gauge(server, "kubemaas_buffered_request_bytes") == 300_000
        for s in admitted:  # the stalled bodies time out
            head = answer(s)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert b"body_timeout_s=2" in head
        wait_for(lambda: gauge(server, "kubemaas_buffered_request_bytes") == 0)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    finally:
        assert server.stop() == 0


def test_an_oversized_head_gets_431_and_the_server_stays_live(mlp_server: Server) -> None:
    s = socket.create_connection(("127.0.0.1", mlp_server.port), timeout=30)
    started = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may close first
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * 1024 * 1024) + b"\r\n\r\n")
    head = answer(s)
    assert head.startswith(b"HTTP/1.1 431"), head[:200]
    assert b"exceed 65536 bytes" in head
    assert time.monotonic() - started < 10
    assert httpx.get(f"{mlp_server.url}/v2/health/live").status_code == 200


def test_a_head_that_arrives_in_one_read_is_counted_too(mlp_dir: Path, tmp_path: Path) -> None:
    """A 60 KB header sent at once completes inside one parse; it must still meet the 8 KiB limit."""
    server = start_server(mlp_dir, tmp_path / "whole-head.log", max_header_bytes="8192")
    try:
        big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(big)
        head = answer(s)
        assert head.startswith(b"HTTP/1.1 431"), head[:200]
        assert b"exceed 8192 bytes" in head
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_head_that_never_completes_gets_408(mlp_dir: Path, tmp_path: Path) -> None:
    server = start_server(mlp_dir, tmp_path / "head.log", header_timeout_s="1")
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(b"POST /v2/models/digits-mlp/infer HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        head = answer(s)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"did not arrive within 1s" in head
    finally:
        assert server.stop() == 0


def test_clients_that_leave_before_their_answer_count_as_499(slow_dir: Path, tmp_path: Path) -> None:
    server = start_server(slow_dir, tmp_path / "leave.log", "--name", "slow", max_batch_size="1")
    x = np.full((32, 1024), 0.1, np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [32, 1024], "data": x.ravel().tolist()}]}

    def impatient(_: int) -> str:
        try:
            httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=httpx.Timeout(30, read=0.05))
        except httpx.ReadTimeout:
            return "left"
        return "answered"

    try:
        with ThreadPoolExecutor(5) as pool:
            outcomes = list(pool.map(impatient, range(5)))
        assert outcomes.count("left") >= 1
        infer = 'route="/v2/models/{name}/infer"'
        wait_for(lambda: gauge(server, "kubemaas_requests_total", infer) == 5)
        # A client may give up just as its answer is sent (counted 200); none is a 5xx.
        assert gauge(server, "kubemaas_requests_total", 'status="499"') >= 1
        assert gauge(server, "kubemaas_requests_total", 'status="500"') == 0
    finally:
        assert server.stop() == 0


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(mlp_dir: Path, tmp_path: Path) -> None:
    server = start_server(mlp_dir, tmp_path / "idle.log", header_timeout_s="1")
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        assert s.recv(1024) == b""  # closed after the timeout, no unsolicited 408
    finally:
        assert server.stop() == 0


def test_a_full_queue_refuses_before_reading_the_body(slow_dir: Path, tmp_path: Path) -> None:
    server = start_server(slow_dir, tmp_path / "full.log", "--name", "slow", max_batch_size="1", max_queue="1")
    x = np.full((1536, 1024), 0.1, np.float32)  # seconds of compute each: wide windows to observe
    header = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1536,1024],'
              b'"parameters":{"binary_data_size":%d}}]}' % x.nbytes)

    def busy() -> int:
        r = httpx.post(f"{server.url}/v2/models/slow/infer", content=header + x.tobytes(), timeout=120,
                       headers={"Inference-Header-Content-Length": str(len(header))})
        return r.status_code

    try:
        with ThreadPoolExecutor(3) as pool:
            # One by one: one runs, one is taken into the next batch while it runs, one waits in
            # the queue, which max_queue=1 then holds full.
            running = []
            for k in range(1, 4):
                running.append(pool.submit(busy))
                wait_for(lambda k=k: gauge(server, "kubemaas_inflight_requests") == k)
            wait_for(lambda: gauge(server, "kubemaas_queue_depth") == 1)
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            head = answer(s)  # not one byte of the body was sent
            assert head.startswith(b"HTTP/1.1 503"), head
            assert b"max_queue=1" in head
            assert [f.result() for f in running] == [200, 200, 200]
    finally:
        assert server.stop() == 0
