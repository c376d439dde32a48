"""Prometheus /metrics and the compute-time header."""

from __future__ import annotations

import httpx

from tests.runtime.serving.conftest import Server

BODY = {"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": [0.25] * 16}]}


def test_infer_answers_carry_the_compute_time(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + "/v2/models/digits-mlp/infer", json=BODY)
    assert r.status_code == 200
    assert float(r.headers["kubemaas-compute-time-ms"]) > 0.0


def test_metrics_count_requests_by_route_and_status(mlp_server: Server) -> None:
    before = httpx.get(mlp_server.url + "/metrics").text
    for _ in range(3):
        httpx.post(mlp_server.url + "/v2/models/digits-mlp/versions/3/infer", json=BODY)
    httpx.post(mlp_server.url + "/v2/models/digits-mlp/versions/3/infer", json={"inputs": 1})
    text = httpx.get(mlp_server.url + "/metrics").text
    assert httpx.get(mlp_server.url + "/metrics").headers["content-type"].startswith("text/plain")
    route = 'model="digits-mlp",route="/v2/models/{name}/versions/{version}/infer"'
    assert f'kubemaas_requests_total{{{route},status="200"}} 3.0' in text
    assert f'kubemaas_requests_total{{{route},status="400"}} 1.0' in text
    assert f'kubemaas_request_duration_seconds_count{{{route}}} 4.0' in text
    assert f'kubemaas_request_duration_seconds_count{{{route}}}' not in before
    for family in ("kubemaas_batch_size_bucket", "kubemaas_queue_depth", "kubemaas_inflight_requests"):
        assert family in text
