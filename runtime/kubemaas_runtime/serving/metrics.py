"""Prometheus metrics, one registry per app (several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The serving metrics of one model (``kubemaas_*``)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model = model
        self.requests = Counter(
            "kubemaas_requests", "HTTP requests by route and status", ["model", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kubemaas_request_duration_seconds", "HTTP request latency by route", ["model", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_rows = Histogram(
            "kubemaas_batch_size", "Rows per ONNX Runtime call", ["model"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        ).labels(model)
        self.queue_depth = Gauge(
            "kubemaas_queue_depth", "Requests waiting for a batch", ["model"], registry=self.registry
        ).labels(model)
        self.in_flight = Gauge(
            "kubemaas_inflight_requests", "Infer requests admitted and not yet answered", ["model"], registry=self.registry
        ).labels(model)
        self.max_batch_rows = Gauge(
            "kubemaas_max_batch_rows", "Most rows the batcher merges into one call (measured when auto)", ["model"],
            registry=self.registry,
        ).labels(model)
        self.batch_reruns = Counter(
            "kubemaas_batch_reruns", "Merged runs re-run one request at a time, by reason (failed: the merged "
            "run raised; mismatch: its outputs did not keep the merged rows)", ["model", "reason"],
            registry=self.registry,
        )
        self.buffered_bytes = Gauge(
            "kubemaas_buffered_request_bytes", "Request-body bytes held in memory across all requests", ["model"],
            registry=self.registry,
        ).labels(model)
        self._counters: dict[tuple[str, int], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (``status`` 499 for a client that left) and its latency."""
        # labels() takes a lock and builds a tuple; cache the children on the hot path.
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.requests.labels(self.model, route, str(status))
        counter.inc()
        hist = self._histograms.get(route)
        if hist is None:
            hist = self._histograms[route] = self.latency.labels(self.model, route)
        hist.observe(seconds)

    def batch_reruns_by_reason(self, reason: str) -> None:
        self.batch_reruns.labels(self.model, reason).inc()

    def track_buffered_bytes(self, held: Callable[[], float]) -> None:
        self.buffered_bytes.set_function(held)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def track_in_flight(self, count: Callable[[], float]) -> None:
        self.in_flight.set_function(count)

    def track_max_batch_rows(self, rows: Callable[[], float]) -> None:
        self.max_batch_rows.set_function(rows)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
