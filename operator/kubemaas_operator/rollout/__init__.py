"""Safe model updates: canary rollouts judged on the pods' own metrics (issue 16).

Pure parts: ``spec`` (``spec.rollout``), ``split`` (replicas per weight), ``samples`` (parse
``/metrics``, per-interval deltas, p95 from buckets), ``judgement`` (one interval ->
continue / rollback / inconclusive), ``state`` (the state machine) and ``podnames`` (the names
Kubernetes gives a Deployment's pods, for Prometheus selectors). I/O: ``scrape`` (pods'
``/metrics`` or a Prometheus query endpoint).
"""

from kubemaas_operator.rollout.judgement import Verdict, judge
from kubemaas_operator.rollout.samples import Histogram, Snapshot, delta, parse_metrics, total
from kubemaas_operator.rollout.spec import Analysis, CanaryStep, RolloutSpec, RolloutSpecError, parse_rollout
from kubemaas_operator.rollout.split import Split, split_replicas
from kubemaas_operator.rollout.state import (
    ANNOTATION,
    Event,
    Observation,
    Plan,
    Revision,
    RolloutState,
    column,
    parse_command,
    step,
)

__all__ = [
    "ANNOTATION", "Analysis", "CanaryStep", "Event", "Histogram", "Observation", "Plan", "Revision",
    "RolloutSpec", "RolloutSpecError", "RolloutState", "Snapshot", "Split", "Verdict", "column", "delta",
    "judge", "parse_command", "parse_metrics", "parse_rollout", "split_replicas", "step", "total",
]
