"""Prometheus /metrics and the compute-time header."""

from __future__ import annotations

import re

import httpx

from tests.runtime.serving.conftest import Server

BODY = {"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": [0.25] * 16}]}
ROUTE = 'model="digits-mlp",route="/v2/models/{name}/versions/{version}/infer"'


def sample(text: str, series: str) -> float:
    """The value of one exact series (name{labels}) in a Prometheus text page; 0 when absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_infer_answers_carry_the_compute_time(mlp_server: Server) -> None:
    r = httpx.post(mlp_server.url + "/v2/models/digits-mlp/infer", json=BODY)
    assert r.status_code == 200
    assert float(r.headers["kubemaas-compute-time-ms"]) > 0.0


def test_metrics_count_requests_by_route_and_status(mlp_server: Server) -> None:
    series = {
        "ok": f'kubemaas_requests_total{{{ROUTE},status="200"}}',
        "bad": f'kubemaas_requests_total{{{ROUTE},status="400"}}',
        "timed": f"kubemaas_request_duration_seconds_count{{{ROUTE}}}",
    }
    before = httpx.get(mlp_server.url + "/metrics").text
    for _ in range(3):
        httpx.post(mlp_server.url + "/v2/models/digits-mlp/versions/3/infer", json=BODY)
    httpx.post(mlp_server.url + "/v2/models/digits-mlp/versions/3/infer", json={"inputs": 1})
    page = httpx.get(mlp_server.url + "/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    delta = {k: sample(page.text, s) - sample(before, s) for k, s in series.items()}
    assert delta == {"ok": 3.0, "bad": 1.0, "timed": 3.0 + 1.0}
    for family in ("kubemaas_batch_size_bucket", "kubemaas_queue_depth", "kubemaas_inflight_requests"):
        assert family in page.text


def test_metrics_export_the_batch_cap_chosen_at_warm_up(mlp_server: Server) -> None:
    page = httpx.get(mlp_server.url + "/metrics").text
    cap = sample(page, 'kubemaas_max_batch_rows{model="digits-mlp"}')
    # measured at warm-up (auto_batch_size defaults on) under the default max_batch_size of 32
    assert 1 <= cap <= 32
    assert cap == int(cap)
