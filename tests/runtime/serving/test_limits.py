"""Limits that keep one client from hurting the others: bytes buffered across all requests,
slow bodies and heads, oversized heads, and clients that leave (counted as 499, not 500).
Raw sockets stand in for misbehaving clients."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def small_heads(mlp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The MLP served with max_header_bytes 8192."""
    server = start_server(mlp_dir, tmp_path_factory.mktemp("heads") / "heads.log", max_header_bytes="8192")
    yield server
    assert server.stop() == 0


def head_of(size: int) -> bytes:
    """A keep-alive GET of /v2/health/live whose request line and headers are ``size`` bytes."""
    start = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size
    return head


def responses(s: socket.socket) -> Iterator[tuple[int, dict[bytes, bytes], bytes]]:
    """(status, headers, body) of each answer on ``s`` until the server closes it."""
    stream = s.makefile("rb")
    while status_line := stream.readline():
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        yield int(status_line.split()[1]), headers, stream.read(int(headers[b"content-length"]))


TOO_LARGE = (431, b'{"error":"the request line and headers exceed 8192 bytes"}')


def test_every_head_of_a_keep_alive_connection_is_counted(small_heads: Server) -> None:
    """The second head arrives whole in one read after the first answer; it was never counted."""
    s = socket.create_connection(("127.0.0.1", small_heads.port), timeout=30)
    answers = responses(s)
    for size in (8192, 8192):  # at the limit: admitted, and the connection stays open
        s.sendall(head_of(size))
        status, headers, _ = next(answers)
        assert (status, headers.get(b"connection")) == (200, None)
    s.sendall(head_of(60_000))
    status, headers, body = next(answers)
    assert (status, body, headers[b"connection"]) == (*TOO_LARGE, b"close")
    assert list(answers) == []  # closed
    assert httpx.get(f"{small_heads.url}/v2/health/live").status_code == 200


def test_a_pipelined_oversized_head_is_refused_after_the_answers_before_it(small_heads: Server) -> None:
    """Three requests in one write, the third's head 8193 bytes: 200, 200, then 431 and close."""
    s = socket.create_connection(("127.0.0.1", small_heads.port), timeout=30)
    s.sendall(head_of(100) + head_of(8192) + head_of(8193) + head_of(100))
    assert [(status, body) for status, _, body in responses(s)] == [
        (200, b'{"live":true}'), (200, b'{"live":true}'), TOO_LARGE,
    ]


def test_a_refusal_waits_for_the_answer_still_owed_on_its_connection(slow_dir: Path, tmp_path: Path) -> None:
    """An inference of seconds, then (same write) a head that never completes: its 408 at the 1 s
    head timeout came first and the connection closed, so the inference's answer was lost."""
    server = start_server(slow_dir, tmp_path / "owed.log", "--name", "slow", header_timeout_s="1")
    x = np.full((1536, 1024), 0.1, np.float32)
    header = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1536,1024],'
              b'"parameters":{"binary_data_size":%d}}]}' % x.nbytes)
    body = header + x.tobytes()
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Inference-Header-Content-Length: %d\r\n\r\n%s" % (len(body), len(header), body)
                  + b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        answers = [(status, body[:40]) for status, _, body in responses(s)]
        assert answers == [(200, b'{"model_name":"slow","model_version":"1"'),
                           (408, b'{"error":"the request line and headers d')]
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
