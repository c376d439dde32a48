"""The analysis against real ``kubemaas serve`` processes on loopback.

The operator cannot scrape kwok's simulated pods, so these tests stand in for a stable pod and
canary pods with real server processes: requests go to them in a 4:1 split (what a Service
over 4 stable + 1 canary pods does), ``PodMetrics`` scrapes their real ``/metrics`` pages, and
``judge`` decides. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubemaas_operator.rollout.judgement import Verdict, judge
from kubemaas_operator.rollout.scrape import PodMetrics, ScrapeError, fetch_snapshot
from kubemaas_operator.rollout.spec import Analysis
from kubemaas_runtime.serving.process import ServeProcess, free_port
from tests.operator.rollout import models

BODY = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8}]}
STABLE_REQUESTS, CANARY_REQUESTS = 96, 24
ANALYSIS = Analysis()  # the defaults: a busy machine slows every server, so only a real regression may breach


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServeProcess]]:
    root = tmp_path_factory.mktemp("rollout")
    bundles = {
        "stable": models.good(root / "stable", seed=0),
        "good": models.good(root / "good", seed=1),
        "failing": models.failing(root / "failing"),
        "slow": models.slow(root / "slow", layers=256),  # ~50-100 ms a request: over 10x the stable's
        "fresh": models.good(root / "fresh", seed=2),
    }
    servers: dict[str, ServeProcess] = {}
    try:
        for name, bundle in bundles.items():
            servers[name] = ServeProcess(bundle, root / f"{name}.log").start()
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def traffic(stable: ServeProcess, canary: ServeProcess, probes: int = 20) -> None:
    """96 inference requests to stable and 24 to the canary, plus kubelet-style readiness probes."""
    with httpx.Client(timeout=30) as client:
        for server, n in ((stable, STABLE_REQUESTS), (canary, CANARY_REQUESTS)):
            for _ in range(n):
                client.post(f"{server.url}/v2/models/m/infer", json=BODY)
            for _ in range(probes):
                client.get(f"{server.url}/v2/health/ready")


def one_interval(stable: ServeProcess, canary: ServeProcess, *, canary_from_start: bool = False) -> Verdict:
    """Baseline scrape, one interval of traffic, second scrape, judgement."""
    s, c = PodMetrics(count_from_start=False), PodMetrics(count_from_start=canary_from_start)
    s.interval({"stable-0": f"{stable.url}/metrics"})
    if not canary_from_start:
        c.interval({"canary-0": f"{canary.url}/metrics"})
    traffic(stable, canary)
    return judge(c.interval({"canary-0": f"{canary.url}/metrics"}).traffic,
                 s.interval({"stable-0": f"{stable.url}/metrics"}).traffic, ANALYSIS)


def test_good_canary_passes(serve: dict[str, ServeProcess]) -> None:
    v = one_interval(serve["stable"], serve["good"])
    assert v.decision == "continue", v.reason
    assert (v.numbers["canary_requests"], v.numbers["stable_requests"]) == (24, 96)  # probes not counted
    assert v.numbers["canary_error_rate"] == 0.0


def test_failing_canary_is_rolled_back_with_the_numbers(serve: dict[str, ServeProcess]) -> None:
    """The failing model's kernel rejects every non-zero input, which the server cannot tell from
    a bad value and answers 400; the analysis still rolls it back, because stable accepts the
    same requests."""
    v = one_interval(serve["stable"], serve["failing"])
    assert v.decision == "rollback"
    assert v.reason == (
        "canary rejects requests stable accepts: 4xx rate 1.00 vs stable 0.00 over 24 requests "
        "(difference > maxErrorRate 0.01)"
    )


def test_slow_canary_is_rolled_back_on_p95(serve: dict[str, ServeProcess]) -> None:
    v = one_interval(serve["stable"], serve["slow"])
    assert v.decision == "rollback", str(v)
    assert v.reason.startswith("canary p95 latency ")
    assert v.numbers["canary_latency_p95_s"] > 2 * v.numbers["stable_latency_p95_s"]


def test_new_canary_pod_counts_from_its_start(serve: dict[str, ServeProcess]) -> None:
    # the operator sees a canary pod for the first time: everything it served is canary traffic
    v = one_interval(serve["stable"], serve["fresh"], canary_from_start=True)
    assert v.numbers["canary_requests"] == 24  # none lost before the first scrape, probes excluded
    assert v.numbers["canary_error_rate"] == 0.0


def test_probes_alone_are_not_evidence(serve: dict[str, ServeProcess]) -> None:
    c = PodMetrics(count_from_start=False)
    pods = {"canary-0": f"{serve['good'].url}/metrics"}
    c.interval(pods)
    with httpx.Client() as client:
        for _ in range(50):
            client.get(f"{serve['good'].url}/v2/health/ready")
            client.get(f"{serve['good'].url}/v2/models/m")
    v = judge(c.interval(pods).traffic, c.interval(pods).traffic, ANALYSIS)
    assert (v.decision, v.reason) == ("inconclusive", "canary answered 0 requests in the interval, "
                                                      "fewer than minRequests 20")


def test_unreachable_pod_is_reported_not_counted(serve: dict[str, ServeProcess]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(ScrapeError, match=r"127\.0\.0\.1"):
        fetch_snapshot(dead, timeout_s=1)
    got = PodMetrics(count_from_start=True).interval({"up": f"{serve['good'].url}/metrics", "down": dead})
    assert (got.pods, list(got.errors)) == (1, ["down"])


def test_a_page_that_is_not_metrics_is_an_error(serve: dict[str, ServeProcess], tmp_path: Path) -> None:
    with pytest.raises(ScrapeError, match="not a Prometheus text page"):
        fetch_snapshot(f"{serve['good'].url}/v2/models/m")  # JSON, not the text format
