"""/metrics pages -> inference traffic, per-interval deltas, p95 from histogram buckets."""

from __future__ import annotations

import math

import pytest

from kubemaas_operator.rollout.samples import Histogram, Snapshot, delta, parse_metrics, total

INF = math.inf
INFER = 'model="m",route="/v2/models/{name}/infer"'
PAGE = f"""# HELP kubemaas_requests_total HTTP requests by route and status
# TYPE kubemaas_requests_total counter
kubemaas_requests_total{{{INFER},status="200"}} 90.0
kubemaas_requests_total{{{INFER},status="500"}} 6.0
kubemaas_requests_total{{{INFER},status="400"}} 4.0
kubemaas_requests_total{{{INFER},status="499"}} 3.0
kubemaas_requests_total{{model="m",route="/v1/models/{{name}}:predict",status="200"}} 10.0
kubemaas_requests_total{{model="m",route="/v2/health/ready",status="200"}} 1000.0
kubemaas_requests_total{{model="m",route="unmatched",status="404"}} 7.0
# HELP kubemaas_request_duration_seconds HTTP request latency by route
# TYPE kubemaas_request_duration_seconds histogram
kubemaas_request_duration_seconds_bucket{{{INFER},le="0.01"}} 50.0
kubemaas_request_duration_seconds_bucket{{{INFER},le="0.1"}} 90.0
kubemaas_request_duration_seconds_bucket{{{INFER},le="+Inf"}} 100.0
kubemaas_request_duration_seconds_count{{{INFER}}} 100.0
kubemaas_request_duration_seconds_sum{{{INFER}}} 3.0
kubemaas_request_duration_seconds_bucket{{model="m",route="/v2/health/ready",le="0.01"}} 1000.0
kubemaas_request_duration_seconds_bucket{{model="m",route="/v2/health/ready",le="0.1"}} 1000.0
kubemaas_request_duration_seconds_bucket{{model="m",route="/v2/health/ready",le="+Inf"}} 1000.0
"""


def test_only_inference_routes_count() -> None:
    """Probes and unmatched routes are not traffic; 499 (the client left) is not an answer."""
    snap = parse_metrics(PAGE)
    assert (snap.requests, snap.server_errors, snap.client_errors) == (90 + 6 + 4 + 10, 6, 4)
    assert snap.latency.buckets == ((0.01, 50.0), (0.1, 90.0), (INF, 100.0))


def test_generation_histograms_are_read() -> None:
    page = """# TYPE kubemaas_time_to_first_token_seconds histogram
kubemaas_time_to_first_token_seconds_bucket{model="lm",le="0.1"} 3.0
kubemaas_time_to_first_token_seconds_bucket{model="lm",le="+Inf"} 4.0
kubemaas_time_to_first_token_seconds_count{model="lm"} 4.0
kubemaas_time_to_first_token_seconds_sum{model="lm"} 0.5
"""
    assert parse_metrics(page).ttft.buckets == ((0.1, 3.0), (INF, 4.0))


def test_malformed_page_raises() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        parse_metrics("kubemaas_requests_total{route=} nonsense\n")


def test_p95_interpolates_inside_its_bucket() -> None:
    # 100 observations: 50 <= 10 ms, 40 more <= 100 ms, 10 above. Rank 95 lies in the +Inf
    # bucket, so the highest finite bound answers (Prometheus semantics).
    hist = Histogram(((0.01, 50.0), (0.1, 90.0), (INF, 100.0)))
    assert hist.quantile(0.95) == 0.1
    # rank 0.5 * 100 = 50 -> end of the first bucket; rank 70 -> halfway through the second
    assert hist.quantile(0.5) == pytest.approx(0.01)
    assert hist.quantile(0.7) == pytest.approx(0.01 + (0.1 - 0.01) * (70 - 50) / (90 - 50))


def test_quantile_of_nothing_is_none() -> None:
    assert Histogram().quantile(0.95) is None
    assert Histogram(((0.1, 0.0), (INF, 0.0))).quantile(0.95) is None


def test_delta_subtracts_counters_and_buckets() -> None:
    before = Snapshot(10, 1, 0, Histogram(((0.1, 8.0), (INF, 10.0))))
    after = Snapshot(30, 4, 2, Histogram(((0.1, 20.0), (INF, 30.0))))
    assert delta(before, after) == Snapshot(20, 3, 2, Histogram(((0.1, 12.0), (INF, 20.0))))


def test_delta_after_a_restart_counts_from_zero() -> None:
    before = Snapshot(500, 0, 0, Histogram(((INF, 500.0),)))
    after = Snapshot(12, 2, 0, Histogram(((INF, 12.0),)))
    assert delta(before, after) == after


def test_delta_without_baseline_is_everything_since_start() -> None:
    after = Snapshot(12, 2, 0)
    assert delta(None, after) == after


def test_total_adds_pods_even_with_different_buckets() -> None:
    a = Snapshot(10, 1, 0, Histogram(((0.1, 10.0), (INF, 10.0))))
    b = Snapshot(5, 0, 1, Histogram(((0.05, 2.0), (0.1, 4.0), (INF, 5.0))))
    t = total([a, b])
    assert (t.requests, t.server_errors, t.client_errors) == (15, 1, 1)
    # at 0.05 only b's bucket is known (a's first bound is 0.1): a lower bound of 0 + 2
    assert t.latency.buckets == ((0.05, 2.0), (0.1, 14.0), (INF, 15.0))


def test_quantile_of_an_inf_only_histogram_is_none() -> None:
    # Only the +Inf bucket: no bound to interpolate to (Prometheus' histogram_quantile answers NaN
    # for fewer than two buckets). It answered 0 s, so a stable side exporting no finite buckets
    # made any canary "infinitely" slower.
    assert Histogram(((INF, 40.0),)).quantile(0.95) is None
    assert Histogram(((INF, 40.0),)).quantile(0.5) is None
    # a rank in the +Inf bucket of a real histogram still answers the highest finite bound
    assert Histogram(((0.1, 10.0), (INF, 40.0))).quantile(0.95) == 0.1


def test_a_restart_seen_only_in_one_bucket_is_still_a_restart() -> None:
    # The pod restarted and has already answered more requests (all slow) than before (all fast):
    # every total went up, but the 0.1 s bucket went down, which only a reset can do (Prometheus'
    # increase() treats each bucket series the same way). Subtracted, the 0.1 s bucket was -5.
    before = Snapshot(5, 0, 0, Histogram(((0.1, 5.0), (INF, 5.0))))
    after = Snapshot(8, 0, 0, Histogram(((0.1, 0.0), (INF, 8.0))))
    assert delta(before, after) == after
