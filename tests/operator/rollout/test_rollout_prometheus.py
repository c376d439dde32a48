"""PromQL for a variant's traffic, and reading the Prometheus HTTP API's instant-vector answers.

No Prometheus server runs here, so the answers are the JSON shape the Prometheus HTTP API
documents for ``/api/v1/query`` (resultType ``vector``), written out by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from kubemaas_operator.rollout.scrape import ScrapeError, prometheus_queries, snapshot_from_prometheus

SELECTOR = 'namespace="ml",pod=~"digits-canary-.*"'


def vector(*results: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1_700_000_000.0, str(value)]} for labels, value in results]}}


def test_queries_select_the_variant_and_the_inference_routes() -> None:
    q = prometheus_queries(SELECTOR, 14.2)
    assert q["requests"] == ('sum by (status) (increase(kubemaas_requests_total{namespace="ml",'
                             'pod=~"digits-canary-.*",route=~".*(/infer|:predict|/completions|/generate|'
                             '/generate_stream)"}[15s]))')
    assert q["latency"].startswith("sum by (le) (increase(kubemaas_request_duration_seconds_bucket{")
    assert q["ttft"] == ('sum by (le) (increase(kubemaas_time_to_first_token_seconds_bucket'
                         '{namespace="ml",pod=~"digits-canary-.*"}[15s]))')


def test_answers_become_a_snapshot() -> None:
    snap = snapshot_from_prometheus({
        "requests": vector(({"status": "200"}, 380.5), ({"status": "500"}, 12.0), ({"status": "429"}, 7.5)),
        "latency": vector(({"le": "0.01"}, 300.0), ({"le": "+Inf"}, 400.0), ({"le": "0.1"}, 390.0)),
        "ttft": vector(),
        "tpot": vector(),
    })
    assert (snap.requests, snap.server_errors, snap.client_errors) == (400.0, 12.0, 7.5)
    assert snap.latency.buckets == ((0.01, 300.0), (0.1, 390.0), (math.inf, 400.0))
    assert snap.ttft.count == 0


@pytest.mark.parametrize(("answer", "match"), [
    ({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}, "bad_data parse error"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "'matrix', expected a vector"),
])
def test_failed_queries_say_why(answer: dict[str, Any], match: str) -> None:
    with pytest.raises(ScrapeError, match=match):
        snapshot_from_prometheus({"requests": answer})


def test_client_closed_requests_are_not_traffic_through_prometheus_either() -> None:
    # Scraped from the pods, a 499 (the client left before the answer) is neither a request nor a
    # 4xx; read through Prometheus it counted as a canary 4xx (clients giving up on a slow canary
    # read as "canary rejects requests stable accepts").
    snap = snapshot_from_prometheus({
        "requests": vector(({"status": "200"}, 90.0), ({"status": "499"}, 30.0), ({"status": "404"}, 10.0)),
    })
    assert (snap.requests, snap.server_errors, snap.client_errors) == (100.0, 0.0, 10.0)
