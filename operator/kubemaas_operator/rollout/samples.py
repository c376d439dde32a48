"""What one serving pod has answered, read from its Prometheus ``/metrics`` page.

A ``Snapshot`` holds cumulative counters of the inference routes only (health probes and
metadata calls would otherwise count as traffic): requests, 5xx answers, 4xx answers, and the
latency histograms ``kubemaas serve`` exports (request duration; time to first token and time
per output token for text generation). Two snapshots of one pod subtract to what happened in
between (``delta``); the deltas of a variant's pods add up (``+``). ``Histogram.quantile``
estimates a quantile from cumulative buckets the way Prometheus' ``histogram_quantile`` does.
The text is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "kubemaas_requests_total"
"""Counter of HTTP requests with labels model, route, status (runtime serving/metrics.py)."""
LATENCY = "kubemaas_request_duration_seconds"
"""Histogram of HTTP request latency with labels model, route."""
TTFT = "kubemaas_time_to_first_token_seconds"
"""Histogram of time to first token (text generation, vLLM's name with our prefix)."""
TPOT = "kubemaas_time_per_output_token_seconds"
"""Histogram of time per output token after the first (text generation)."""

CLIENT_CLOSED = "499"
"""The status ``kubemaas serve`` counts for a client that disconnected before its answer."""
INFERENCE_ROUTE = re.compile(r"(/infer|:predict|/completions|/generate|/generate_stream)$")
"""Route templates that carry model traffic: v2 infer, v1 predict, OpenAI completions, v2 generate."""


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (``le``), the last bound ``inf``."""

    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def cumulative(self, bound: float) -> float:
        """Observations <= ``bound`` as far as the buckets tell (the largest bucket at or below it)."""
        seen = 0.0
        for le, n in self.buckets:
            if le > bound:
                break
            seen = n
        return seen

    def _combine(self, other: Histogram, sign: float) -> Histogram:
        bounds = sorted({le for le, _ in self.buckets} | {le for le, _ in other.buckets})
        return Histogram(tuple((b, self.cumulative(b) + sign * other.cumulative(b)) for b in bounds))

    def is_below(self, other: Histogram) -> bool:
        """Some bucket of ``other`` holds more than the same bucket here (a counter reset)."""
        mine = dict(self.buckets)
        return any(mine.get(le, 0.0) < n for le, n in other.buckets)

    def __add__(self, other: Histogram) -> Histogram:
        return self._combine(other, 1.0)

    def __sub__(self, other: Histogram) -> Histogram:
        return self._combine(other, -1.0)

    def above(self, bound: float) -> float:
        """Observations above ``bound`` (>= 0), interpolating linearly inside the bucket that holds
        it, as ``quantile`` does (so ``quantile(q) > b`` exactly when ``above(b) > (1 - q) * count``);
        everything in the ``+Inf`` bucket is above any finite bound."""
        total = self.count
        lower, below = 0.0, 0.0
        for le, n in self.buckets:
            if bound <= le:
                if math.isinf(le) or le <= lower:
                    return total - below
                return total - (below + (n - below) * (bound - lower) / (le - lower))
            lower, below = le, n
        return total - below

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q < 1) in the bucket unit, None without observations.

        Linear interpolation inside the bucket that holds rank ``q * count``, lower edge 0 for
        the first bucket; a rank in the ``+Inf`` bucket answers the highest finite bound, and a
        histogram with no finite bucket has no estimate (None) (Prometheus ``histogram_quantile``
        semantics: NaN for fewer than two buckets).
        """
        total = self.count
        if total <= 0 or not any(math.isfinite(le) for le, _ in self.buckets):
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return lower
                if n == below:
                    return le
                return lower + (le - lower) * (rank - below) / (n - below)
            lower, below = le, n
        return lower


@dataclass(frozen=True)
class Snapshot:
    """Inference traffic of one pod (or a sum of pods): counters and latency histograms."""

    requests: float = 0.0
    server_errors: float = 0.0
    """Answers with status >= 500 (model failures, overload 503s, timeouts)."""
    client_errors: float = 0.0
    """Answers with status 400-498 (a model that rejects inputs the stable one accepts); 499, a
    client that left before the answer (nginx's "client closed request"), is no answer and is
    not counted at all."""
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)

    def __add__(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            self.requests + other.requests,
            self.server_errors + other.server_errors,
            self.client_errors + other.client_errors,
            self.latency + other.latency,
            self.ttft + other.ttft,
            self.tpot + other.tpot,
        )

    def __sub__(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            self.requests - other.requests,
            self.server_errors - other.server_errors,
            self.client_errors - other.client_errors,
            self.latency - other.latency,
            self.ttft - other.ttft,
            self.tpot - other.tpot,
        )

    def is_below(self, other: Snapshot) -> bool:
        """Some counter or bucket here is smaller than in ``other``: the process restarted in between
        (every bucket is a counter of its own, as Prometheus' ``increase()`` reads it)."""
        return (
            self.requests < other.requests
            or self.server_errors < other.server_errors
            or self.client_errors < other.client_errors
            or self.latency.is_below(other.latency)
            or self.ttft.is_below(other.ttft)
            or self.tpot.is_below(other.tpot)
        )


def delta(before: Snapshot | None, after: Snapshot) -> Snapshot:
    """What a pod answered between two snapshots.

    ``before`` None counts everything since the process started (a new canary pod serves
    nothing but canary traffic). A counter that went down means the server restarted; then
    ``after`` alone is the best estimate (Prometheus ``increase()`` treats resets the same way).
    """
    if before is None or after.is_below(before):
        return after
    return after - before


def total(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several pods' snapshots (or deltas)."""
    out = Snapshot()
    for snap in snapshots:
        out = out + snap
    return out


def _le(value: str) -> float:
    return math.inf if value in ("+Inf", "Inf", "inf") else float(value)


def parse_metrics(text: str) -> Snapshot:
    """The inference traffic in one ``/metrics`` page (Prometheus text format 0.0.4).

    Sums over models and routes that match ``INFERENCE_ROUTE``; the generation histograms
    are summed over all their series. Raises ValueError (from the parser) on a malformed page.
    """
    requests = server = client = 0.0
    buckets: dict[str, dict[float, float]] = {LATENCY: {}, TTFT: {}, TPOT: {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == REQUESTS:
                status = labels.get("status", "")
                if not INFERENCE_ROUTE.search(labels.get("route", "")) or status == CLIENT_CLOSED:
                    continue
                requests += value
                if status.startswith("5"):
                    server += value
                elif status.startswith("4"):
                    client += value
            elif name.endswith("_bucket") and name[: -len("_bucket")] in buckets:
                base = name[: -len("_bucket")]
                if base == LATENCY and not INFERENCE_ROUTE.search(labels.get("route", "")):
                    continue
                le = _le(labels["le"])
                buckets[base][le] = buckets[base].get(le, 0.0) + value

    def hist(base: str) -> Histogram:
        return Histogram(tuple(sorted(buckets[base].items())))

    return Snapshot(requests, server, client, hist(LATENCY), hist(TTFT), hist(TPOT))
