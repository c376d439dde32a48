"""ModelService status from one observed-state object. Pure.

``build_status(observed)`` gives the whole status: conditions ArtifactReady, Compressed,
Available, Ready (Ready names the first blocker), ``phase``, the REASON column and the
served model's lineage. None values delete keys (``kube.patching.status_patch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.modelservice import children
from kubemaas_operator.controllers.modelservice import compression as jobs
from kubemaas_operator.controllers.modelservice.artifact import Resolution
from kubemaas_operator.controllers.modelservice.compress import NOT_REQUESTED, CompressionResult
from kubemaas_operator.controllers.modelservice.observe import DeploymentHealth
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.kube import conditions
from kubemaas_operator.kube.conditions import Condition, false, true

FATAL_POD_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
FATAL_READY_REASONS = frozenset({"Conflict", "ChildRefused", "InvalidSpec"})
NO_HEALTH = DeploymentHealth(0, 0, 0, 0, False, False, None)
RETRYING = "RetryingAPIError"
"""REASON while a transient API error is retried with back-off."""


@dataclass(frozen=True)
class Observed:
    """Everything one sync learned about a ModelService and its children."""

    name: str
    namespace: str
    generation: int
    old: Mapping[str, Any]
    """The stored status (its conditions keep their lastTransitionTime)."""
    spec: ModelServiceSpec
    artifact: Resolution
    comp: CompressionResult | None = None
    serving: children.ServingBundle | None = None
    deployed: bool = False
    health: DeploymentHealth = NO_HEALTH
    observed_replicas: int = 0
    scale_note: str | None = None
    """e.g. a kubectl scale the HPA overrides (``observe.ignored_scale``)."""
    blocked: Condition | None = None
    """Ready=False from the roll-out step: Conflict, ChildRefused."""
    retrying: Condition | None = None
    """Ready=False while a transient API error is retried with back-off."""


def _available(o: Observed) -> Condition:
    health, problem = o.health, o.health.problem
    if not o.deployed:
        avail = false("Available", "NotDeployed", "no serving Deployment yet")
    elif health.replicas == 0:
        avail = false("Available", "ScaledToZero", "replicas is 0")
    elif health.available:
        avail = true("Available", "MinimumReplicasAvailable",
                     f"{health.available_replicas}/{health.replicas} replicas available")
    elif problem is not None:
        avail = false("Available", problem.reason, problem.message)
    else:
        avail = false("Available", "ReplicasUnavailable", f"{health.ready_replicas}/{health.replicas} replicas ready")
    if o.scale_note:
        avail = Condition(avail.type, avail.status, avail.reason, f"{avail.message}; {o.scale_note}")
    return avail


def _ready(o: Observed, first: list[Condition], avail: Condition, url: str) -> Condition:
    health, problem = o.health, o.health.problem
    blocker = o.blocked or o.retrying or conditions.first_failing(first)
    if blocker is not None:
        return false("Ready", blocker.reason, blocker.message)
    if health.rolled_out and avail.ok:
        return true("Ready", "ModelServing", f"serving variant {o.serving.variant if o.serving else '?'} at {url}")
    if problem is not None:
        return false("Ready", problem.reason, problem.message)
    if not avail.ok:
        return false("Ready", avail.reason, avail.message)
    return false(
        "Ready", "RollingOut",
        f"{health.updated_replicas}/{health.replicas} replicas updated, "
        f"{health.available_replicas}/{health.replicas} available",
    )


def _phase(o: Observed, ready: Condition) -> str:
    problem = o.health.problem
    failed = (
        o.artifact.fatal
        or (o.comp is not None and o.comp.failed)
        or (o.blocked is not None and o.blocked.reason in FATAL_READY_REASONS)
        or (problem is not None
            and problem.reason in FATAL_POD_REASONS | {"ProgressDeadlineExceeded", "CrashLoopBackOff"})
    )
    if ready.ok:
        return "Ready"
    if failed:
        return "Failed"
    if o.comp is not None and o.comp.running:
        return "Compressing"
    if o.artifact.bundle is None and not o.deployed:
        return "Pending"
    return "RollingOut"


def compressed_condition(o: Observed) -> Condition:
    """Compressed: the compression step's, else NotRequested / WaitingForArtifact."""
    if o.comp is not None:
        return o.comp.condition
    if o.spec.compression.mode == "none":
        return NOT_REQUESTED
    return false("Compressed", "WaitingForArtifact", "compression starts once the bundle is known")


def build_status(o: Observed, *, now: str | None = None) -> dict[str, Any]:
    """Pure: everything observed -> the full ModelService status (None values delete keys)."""
    first = [o.artifact.condition, compressed_condition(o)]
    avail = _available(o)
    url = children.url(o.name, o.namespace)
    ready = _ready(o, first, avail, url)
    conds = [*first, avail, ready]
    return {
        "phase": _phase(o, ready),
        "observedGeneration": o.generation,
        "url": url,
        "replicas": o.observed_replicas,
        "readyReplicas": o.health.ready_replicas,
        "updatedReplicas": o.health.updated_replicas,
        "selector": children.selector(o.name),
        "reason": None if ready.ok else _reason_column(ready, o.comp),
        "message": (o.scale_note or None) if ready.ok else ready.message,
        "conditions": conditions.merge_conditions(o.old.get("conditions"), conds, generation=o.generation, now=now),
        "model": o.serving.status() if o.serving is not None and o.deployed else None,
        "compression": o.comp.status if o.comp is not None else None,
    }


def retrying_status(old: Mapping[str, Any], generation: int, message: str) -> dict[str, Any]:
    """The status while a transient API error (409, 429, 5xx, a quota's 403) is retried with back-off:
    the stored conditions with Ready replaced, so REASON says why nothing moves."""
    cond = false("Ready", RETRYING, message)
    kept = [Condition(str(c["type"]), c["status"], str(c.get("reason") or ""), str(c.get("message") or ""))
            for c in old.get("conditions") or [] if c.get("type") != "Ready"]
    return {
        "observedGeneration": generation, "reason": RETRYING, "message": message,
        "conditions": conditions.merge_conditions(old.get("conditions"), [*kept, cond], generation=generation),
    }


def invalid_spec_status(
    old: Mapping[str, Any], generation: int, message: str, reason: str = "InvalidSpec"
) -> dict[str, Any]:
    """The status of a ModelService the operator cannot serve as specified (Failed; InvalidSpec,
    or ChildRefused when the API server refuses a child object it derived)."""
    bad = false("Ready", reason, message)
    return {
        "phase": "Failed", "observedGeneration": generation, "reason": bad.reason, "message": bad.message,
        "conditions": conditions.merge_conditions(old.get("conditions"), [bad], generation=generation),
    }


def _reason_column(ready: Condition, comp: CompressionResult | None) -> str:
    """status.reason (the REASON printer column): the Ready reason, naming the drop for a failed gate."""
    if ready.reason == jobs.GATE_FAILED and comp is not None and comp.status:
        return jobs.gate_reason(comp.status)
    return ready.reason
