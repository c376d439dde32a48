"""Reading the canary's and stable's traffic: each pod's ``/metrics``, or a Prometheus server.

``PodMetrics`` scrapes every ready pod of a variant (concurrently, stdlib HTTP: the operator
image carries no HTTP client library), remembers each pod's last snapshot and returns the sum
of the per-pod deltas since the previous call, which is one analysis interval. Pods that did
not answer are reported, not guessed.

``PrometheusSource`` asks a Prometheus HTTP API (``/api/v1/query``) for the same numbers with
``increase(...[window])`` over the variant's pods, for clusters where the pods are scraped by
Prometheus anyway (the Argo Rollouts / Flagger set-up). The queries are built and their answers
read by pure functions.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubemaas_operator.rollout.samples import (
    CLIENT_CLOSED,
    INFERENCE_ROUTE,
    LATENCY,
    REQUESTS,
    TPOT,
    TTFT,
    Histogram,
    Snapshot,
    delta,
    parse_metrics,
)

SCRAPE_TIMEOUT_S = 2.0
MAX_PAGE_BYTES = 8 * 1024 * 1024
"""A /metrics page larger than this is refused (a pod cannot make the operator read without end)."""


class ScrapeError(RuntimeError):
    """A pod's /metrics or a Prometheus query could not be read; the message names the URL."""


def fetch_snapshot(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> Snapshot:
    """GET ``url`` (a pod's ``http://IP:PORT/metrics``) and parse it.

    Raises ScrapeError naming the URL on a connection error, a non-200 answer, an oversized or
    malformed page.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(MAX_PAGE_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(f"{url}: {exc}") from exc
    if len(body) > MAX_PAGE_BYTES:
        raise ScrapeError(f"{url}: metrics page larger than {MAX_PAGE_BYTES} bytes")
    try:
        return parse_metrics(body.decode("utf-8", errors="replace"))
    except (ValueError, KeyError) as exc:
        raise ScrapeError(f"{url}: not a Prometheus text page: {exc}") from exc


@dataclass
class IntervalTraffic:
    """A variant's traffic over one interval: the summed deltas, the pods counted, the pods that failed."""

    traffic: Snapshot
    pods: int
    errors: dict[str, str] = field(default_factory=dict)


class PodMetrics:
    """Per-pod scrape state for one variant (canary or stable) of one ModelService.

    ``count_from_start``: a pod seen for the first time counts everything since its process
    started (right for canary pods, which serve nothing but canary traffic); otherwise the
    first sighting is only the baseline for the next interval (right for long-lived stable pods).
    """

    def __init__(self, *, count_from_start: bool,
                 fetch: Callable[[str], Snapshot] = fetch_snapshot, workers: int = 8) -> None:
        self.count_from_start = count_from_start
        self._fetch = fetch
        self._workers = workers
        self._last: dict[str, Snapshot] = {}

    def interval(self, pods: Mapping[str, str]) -> IntervalTraffic:
        """Scrape ``pods`` (key, e.g. the pod UID -> metrics URL) and return the traffic since the last call.

        Pods no longer listed are forgotten; a pod that fails to answer keeps its previous
        baseline and is listed in ``errors``.
        """
        for gone in set(self._last) - set(pods):
            del self._last[gone]
        results: dict[str, Snapshot | str] = {}

        def one(item: tuple[str, str]) -> tuple[str, Snapshot | str]:
            key, url = item
            try:
                return key, self._fetch(url)
            except ScrapeError as exc:
                return key, str(exc)

        if pods:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(pods))) as pool:
                results = dict(pool.map(one, pods.items()))
        traffic, counted, errors = Snapshot(), 0, {}
        for key, got in results.items():
            if isinstance(got, str):
                errors[key] = got
                continue
            before = self._last.get(key)
            self._last[key] = got
            if before is None and not self.count_from_start:
                continue
            traffic = traffic + delta(before, got)
            counted += 1
        return IntervalTraffic(traffic, counted, errors)


# -- Prometheus HTTP API --------------------------------------------------------------------------


def _window(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def prometheus_queries(selector: str, window_s: float) -> dict[str, str]:
    """PromQL for a variant's traffic over the last ``window_s`` seconds.

    ``selector`` is the label matchers of the variant's pods without braces, e.g.
    ``namespace="ml",pod=~"digits-canary-.*"``. Keys: ``requests`` (by status) and one bucket
    query (by le) per histogram.
    """
    routes = INFERENCE_ROUTE.pattern.removesuffix("$").strip("()")
    route = f'route=~".*({routes})"'
    w = _window(window_s)
    return {
        "requests": f"sum by (status) (increase({REQUESTS}{{{selector},{route}}}[{w}]))",
        "latency": f"sum by (le) (increase({LATENCY}_bucket{{{selector},{route}}}[{w}]))",
        "ttft": f"sum by (le) (increase({TTFT}_bucket{{{selector}}}[{w}]))",
        "tpot": f"sum by (le) (increase({TPOT}_bucket{{{selector}}}[{w}]))",
    }


def _vector(answer: Mapping[str, Any]) -> list[tuple[dict[str, str], float]]:
    if answer.get("status") != "success":
        raise ScrapeError(f"prometheus query failed: {answer.get('errorType', '')} {answer.get('error', answer)}")
    data = answer.get("data") or {}
    if data.get("resultType") != "vector":
        raise ScrapeError(f"prometheus answered {data.get('resultType')!r}, expected a vector")
    return [(dict(r.get("metric") or {}), float(r["value"][1])) for r in data.get("result") or []]


def snapshot_from_prometheus(answers: Mapping[str, Mapping[str, Any]]) -> Snapshot:
    """A Snapshot from the JSON answers of ``prometheus_queries`` (same keys).

    Raises ScrapeError when an answer is an error or not an instant vector.
    """
    requests = server = client = 0.0
    for labels, value in _vector(answers["requests"]):
        status = labels.get("status", "")
        if status == CLIENT_CLOSED:  # no answer: not traffic, as parse_metrics reads a pod's page
            continue
        requests += value
        server += value if status.startswith("5") else 0.0
        client += value if status.startswith("4") else 0.0

    def hist(key: str) -> Histogram:
        if key not in answers:
            return Histogram()
        merged: dict[float, float] = {}
        for labels, value in _vector(answers[key]):
            le = math.inf if labels.get("le") in ("+Inf", "Inf") else float(labels.get("le", "nan"))
            merged[le] = merged.get(le, 0.0) + value
        return Histogram(tuple(sorted((k, v) for k, v in merged.items() if not math.isnan(k))))

    return Snapshot(requests, server, client, hist("latency"), hist("ttft"), hist("tpot"))


class PrometheusSource:
    """A Prometheus server's ``/api/v1/query`` endpoint (``spec.rollout.analysis.prometheusUrl``)."""

    def __init__(self, base_url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str) -> Mapping[str, Any]:
        """One instant query; raises ScrapeError naming the URL on any failure."""
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                answer: Mapping[str, Any] = json.loads(resp.read(MAX_PAGE_BYTES))
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read(MAX_PAGE_BYTES))
            except ValueError:
                raise ScrapeError(f"{url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ScrapeError(f"{url}: {exc}") from exc
        return answer

    def window(self, selector: str, window_s: float) -> Snapshot:
        """The variant's traffic over the last ``window_s`` seconds."""
        return snapshot_from_prometheus({k: self.query(q) for k, q in prometheus_queries(selector, window_s).items()})
