"""The analysis loop's memory: baselines, due intervals, a fresh start for a new canary revision.

Pods are stood in for by a dict of /metrics pages the test advances (the fetch function is the
seam; the real scrape is tested against kubemaas serve processes in test_rollout_serve.py).
"""

from __future__ import annotations

import asyncio

from kubemaas_operator.rollout.analysis import Analyses, Variants
from kubemaas_operator.rollout.samples import Snapshot
from kubemaas_operator.rollout.spec import Analysis

ANALYSIS = Analysis.model_validate({"interval": "10s", "minRequests": 5})
PODS = Variants(stable={"s": "http://stable/metrics"}, canary={"c": "http://canary/metrics"})


def test_baseline_then_one_verdict_per_interval() -> None:
    pages = {"http://stable/metrics": Snapshot(1000), "http://canary/metrics": Snapshot(0)}
    analyses = Analyses(fetch=lambda url: pages[url])
    key = ("ml", "digits")

    async def run() -> None:
        assert await analyses.measure(key, "v2", PODS, ANALYSIS, now=0.0) is None  # baseline
        assert analyses.next_in(key, 0.0) == 10.0
        pages["http://stable/metrics"], pages["http://canary/metrics"] = Snapshot(1040), Snapshot(4)
        assert await analyses.measure(key, "v2", PODS, ANALYSIS, now=5.0) is None  # not due, 4 < minRequests
        pages["http://stable/metrics"], pages["http://canary/metrics"] = Snapshot(1080), Snapshot(8)
        verdict = await analyses.measure(key, "v2", PODS, ANALYSIS, now=10.0)
        assert verdict is not None  # due: the two scrapes' deltas add up to one interval
        assert verdict.reason == "canary passed: error rate 0.00 over 8 requests (stable 0.00 over 80)"
        assert analyses.last(key) == verdict
        # before the next due time a passing sum is kept quiet, but a breach is returned at once
        pages["http://stable/metrics"], pages["http://canary/metrics"] = Snapshot(1100), Snapshot(10)
        assert await analyses.measure(key, "v2", PODS, ANALYSIS, now=12.0) is None
        pages["http://stable/metrics"], pages["http://canary/metrics"] = Snapshot(1120), Snapshot(16, 6)
        early = await analyses.measure(key, "v2", PODS, ANALYSIS, now=13.0)
        assert early is not None
        assert early.reason == "canary error rate 0.75 > 0.01 over 8 requests (stable 0.00 over 40)"
        # a new canary revision starts over: a new baseline, no verdict yet
        assert await analyses.measure(key, "v3", PODS, ANALYSIS, now=11.0) is None
        analyses.forget(key)
        assert analyses.next_in(key, 11.0) is None

    asyncio.run(run())

