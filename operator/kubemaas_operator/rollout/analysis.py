"""The analysis loop's memory: per ModelService, the scrape baselines of its stable and canary
pods and when the next interval falls due. One ``Analyses`` per operator (in the controller
``Context``), so nothing is module-global.

Each reconcile of a ModelService with a canary calls ``measure``: the first call for a canary
revision takes the stable pods' baseline; every ``interval`` after that it scrapes both
variants (or asks Prometheus), judges the interval and returns the Verdict. ``next_in`` says
when to reconcile again. The state (baselines) is lost on an operator restart, which only
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


@dataclass(frozen=True)
class Variants:
    """The pods of each variant (key, e.g. pod name -> metrics URL) and their Prometheus selectors."""

    stable: Mapping[str, str]
    canary: Mapping[str, str]
    stable_selector: str = ""
    canary_selector: str = ""


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
        """The verdict of the interval that ended, when one is due; None otherwise.

        ``identity`` is the canary revision: a new one starts a new analysis (fresh baselines).
        Scrapes run in a thread (the HTTP client is blocking); an unreachable pod is skipped and
        counts as no traffic, so it can only make the interval inconclusive.
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
        if now < run.next_due:
            return None
        run.next_due = max(run.next_due + analysis.interval_s, now + analysis.interval_s / 2)
        if analysis.prometheus_url is not None:
            source = PrometheusSource(analysis.prometheus_url)
            try:
                canary, stable = await asyncio.gather(
                    asyncio.to_thread(source.window, pods.canary_selector, analysis.interval_s),
                    asyncio.to_thread(source.window, pods.stable_selector, analysis.interval_s),
                )
            except ScrapeError as exc:
                run.last = Verdict("inconclusive", f"cannot read the interval from Prometheus: {exc}")
                return run.last
            run.errors = {}
        else:
            c, s = await asyncio.gather(asyncio.to_thread(run.canary.interval, pods.canary),
                                        asyncio.to_thread(run.stable.interval, pods.stable))
            canary, stable, run.errors = c.traffic, s.traffic, {**c.errors, **s.errors}
        run.last = judge(canary, stable, analysis)
        return run.last
