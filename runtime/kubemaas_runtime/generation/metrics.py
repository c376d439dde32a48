"""Prometheus metrics of a text-generation server: vLLM's names with the ``kubemaas_`` prefix.

``kubemaas_requests_total`` and ``kubemaas_request_duration_seconds`` (route, status) are the same
series tensor serving exports, so rollout analysis reads both kinds of pods alike.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class GenerationMetrics:
    """One registry per app; ``model`` is a label on every series."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.model = model
        self.requests = Counter("kubemaas_requests", "HTTP requests by route and status",
                                ["model", "route", "status"], registry=r)
        self.latency = Histogram("kubemaas_request_duration_seconds", "HTTP request latency by route",
                                 ["model", "route"], buckets=E2E_BUCKETS, registry=r)
        self.ttft = Histogram("kubemaas_time_to_first_token_seconds", "Arrival to first generated token",
                              ["model"], buckets=TTFT_BUCKETS, registry=r).labels(model)
        self.tpot = Histogram("kubemaas_time_per_output_token_seconds", "Time between generated tokens",
                              ["model"], buckets=TPOT_BUCKETS, registry=r).labels(model)
        self.e2e = Histogram("kubemaas_e2e_request_latency_seconds", "Arrival to last token", ["model"],
                             buckets=E2E_BUCKETS, registry=r).labels(model)
        self.prompt_tokens = Counter("kubemaas_prompt_tokens", "Prompt tokens prefilled", ["model"],
                                     registry=r).labels(model)
        self.generation_tokens = Counter("kubemaas_generation_tokens", "Tokens generated", ["model"],
                                         registry=r).labels(model)
        self.decode_steps = Counter("kubemaas_decode_steps", "Batched decode steps run", ["model"],
                                    registry=r).labels(model)
        self.batch_size = Histogram("kubemaas_decode_batch_size", "Sequences per decode step", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r).labels(model)
        self.running = Gauge("kubemaas_num_requests_running", "Sequences in the running batch", ["model"],
                             registry=r).labels(model)
        self.waiting = Gauge("kubemaas_num_requests_waiting", "Sequences waiting for a slot", ["model"],
                             registry=r).labels(model)
        self.finished = Counter("kubemaas_request_success", "Finished sequences by finish reason",
                                ["model", "finished_reason"], registry=r)
        self.aborted = Counter("kubemaas_request_aborted", "Sequences stopped because the client went away",
                               ["model"], registry=r).labels(model)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(self.model, route, str(status)).inc()
        self.latency.labels(self.model, route).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
