"""The analysis loop's memory: per ModelService, the scrape baselines of its stable and canary
pods and when the next interval falls due. One ``Analyses`` per operator (in the controller
``Context``), so nothing is module-global.

Each reconcile of a ModelService with a canary calls ``measure``: the first call for a canary
revision takes the stable pods' baseline; later calls scrape both variants and add up their
traffic; every ``interval`` the sum is judged and the Verdict returned (a breach is returned as
soon as the sum shows it). ``next_in`` says when the next interval is due. The state (baselines) is lost on an operator restart, which only
delays the next verdict by one interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kubemaas_operator.rollout.judgement import Verdict, judge
from kubemaas_operator.rollout.samples import Snapshot
from kubemaas_operator.rollout.scrape import PodMetrics, PrometheusSource, ScrapeError, fetch_snapshot
from kubemaas_operator.rollout.spec import Analysis

Key = tuple[str, str]


@dataclass
class _Run:
    identity: str
    next_due: float
    stable: PodMetrics
    canary: PodMetrics
    last: Verdict | None = None
    errors: dict[str, str] = field(default_factory=dict)
    canary_sum: Snapshot = field(default_factory=Snapshot)
    """Canary traffic since the last verdict (the deltas of every scrape added up)."""
    stable_sum: Snapshot = field(default_factory=Snapshot)


@dataclass(frozen=True)
class Variants:
    """The pods of each variant (key, e.g. pod name -> metrics URL) and their Prometheus selectors
    (label matchers without braces; ``""``: no pod of the variant can be named, no traffic)."""

    stable: Mapping[str, str]
    canary: Mapping[str, str]
    stable_selector: str = ""
    canary_selector: str = ""


def _window(source: PrometheusSource, selector: str, window_s: float) -> Snapshot:
    """The variant's traffic from Prometheus; an empty selector (no pod of the variant can be named
    yet) is no traffic, never a query over every pod of the namespace."""
    return source.window(selector, window_s) if selector else Snapshot()


class Analyses:
    """Canary analysis state of every ModelService this operator reconciles."""

    def __init__(self, fetch: Callable[[str], Snapshot] = fetch_snapshot) -> None:
        self._fetch = fetch
        self._runs: dict[Key, _Run] = {}

    def forget(self, key: Key) -> None:
        """Drop the state of ``key`` (its canary ended, or the ModelService is gone)."""
        self._runs.pop(key, None)

    def next_in(self, key: Key, now: float) -> float | None:
        """Seconds until ``key``'s next interval is due (None without a running analysis)."""
        run = self._runs.get(key)
        return None if run is None else max(0.0, run.next_due - now)

    def last(self, key: Key) -> Verdict | None:
        """The most recent verdict of ``key``'s running analysis."""
        run = self._runs.get(key)
        return None if run is None else run.last

    async def measure(self, key: Key, identity: str, pods: Variants, analysis: Analysis, now: float) -> Verdict | None:
        """The verdict of the interval that ended when one is due, an early rollback, or None.

        ``identity`` is the canary revision: a new one starts a new analysis (fresh baselines).
        Pods are scraped on every call (every reconcile) and their deltas added up since the last
        verdict, so a pod that goes away mid-interval still counts. Between due times the sum so
        far is judged too, and only an error-rate rollback is acted on early: a canary failing
        every request is removed within one reconcile tick once it has answered ``minRequests``,
        while latency (a p95 of a few dozen requests is noise) and promotion wait for whole
        intervals. Scrapes run in a thread (the HTTP client is
        blocking); an unreachable pod counts as no traffic, so it can only make an interval
        inconclusive. With ``prometheusUrl`` Prometheus is asked once per due interval instead.
        """
        run = self._runs.get(key)
        if run is None or run.identity != identity:
            run = _Run(identity, now + analysis.interval_s,
                       PodMetrics(count_from_start=False, fetch=self._fetch),
                       PodMetrics(count_from_start=True, fetch=self._fetch))
            self._runs[key] = run
            if analysis.prometheus_url is None:
                await asyncio.to_thread(run.stable.interval, pods.stable)
            return None
        due = now >= run.next_due
        if analysis.prometheus_url is not None:
            if not due:
                return None
            run.next_due = max(run.next_due + analysis.interval_s, now + analysis.interval_s / 2)
            source = PrometheusSource(analysis.prometheus_url)
            try:
                canary, stable = await asyncio.gather(
                    asyncio.to_thread(_window, source, pods.canary_selector, analysis.interval_s),
                    asyncio.to_thread(source.window, pods.stable_selector, analysis.interval_s),
                )
            except ScrapeError as exc:
                run.last = Verdict("inconclusive", f"cannot read the interval from Prometheus: {exc}")
                return run.last
            run.last = judge(canary, stable, analysis)
            return run.last
        c, s = await asyncio.gather(asyncio.to_thread(run.canary.interval, pods.canary),
                                    asyncio.to_thread(run.stable.interval, pods.stable))
        run.errors = {**c.errors, **s.errors}
        run.canary_sum, run.stable_sum = run.canary_sum + c.traffic, run.stable_sum + s.traffic
        verdict = judge(run.canary_sum, run.stable_sum, analysis)
        if not due and not (verdict.decision == "rollback" and verdict.cause in ("errors", "client-errors")):
            return None
        run.next_due = max(run.next_due + analysis.interval_s, now + analysis.interval_s / 2)
        run.canary_sum, run.stable_sum = Snapshot(), Snapshot()
        run.last = verdict
        return verdict
