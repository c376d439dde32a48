"""Pure readings of a ModelService's children: is the serving Deployment healthy, is
``spec.replicas`` outside the autoscaling range. No I/O (the reconcile step fetches, these judge).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.kube.manifests import ANNOTATION_SPEC_HASH
from kubemaas_operator.kube.observe import Problem, condition, pod_problem


@dataclass(frozen=True)
class DeploymentHealth:
    """Replica counts of the serving Deployment, whether it is available and fully rolled out,
    and the problem blocking it (None when nothing does)."""

    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    available: bool
    rolled_out: bool
    problem: Problem | None


def deployment_health(
    deploy: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    *,
    desired_hash: str | None,
    now: dt.datetime | None = None,
    stuck_after_s: float = 120.0,
) -> DeploymentHealth:
    """Availability and rollout state of the serving Deployment, with the blocking problem if any."""
    if deploy is None:
        return DeploymentHealth(0, 0, 0, 0, False, False, None)
    now = now or dt.datetime.now(dt.UTC)
    spec = deploy.get("spec") or {}
    st = deploy.get("status") or {}
    meta = deploy.get("metadata") or {}
    want = int(spec.get("replicas", 1))
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    available_n = int(st.get("availableReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available_cond = condition(deploy, "Available")
    available = available_n > 0 and (available_cond is None or available_cond.get("status") == "True")
    current_hash = (meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    observed = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    rolled_out = (
        observed
        and (desired_hash is None or current_hash == desired_hash)
        and updated >= want
        and available_n >= want
        and total == want  # old pods gone
    )
    problem: Problem | None = None
    # Pods of the current template first: a stuck new revision is the news.
    current = [p for p in pods if (p.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH) == current_hash]
    others = [p for p in pods if p not in current]
    for pod in [*current, *others]:
        problem = pod_problem(pod, now=now, stuck_after_s=stuck_after_s)
        if problem:
            break
    if problem is None:
        progressing = condition(deploy, "Progressing")
        failure = condition(deploy, "ReplicaFailure")
        if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
            problem = Problem("ProgressDeadlineExceeded", str(progressing.get("message", "")))
        elif failure is not None and failure.get("status") == "True":
            problem = Problem(str(failure.get("reason") or "ReplicaFailure"), str(failure.get("message", "")))
    return DeploymentHealth(want, ready, updated, available_n, available, bool(rolled_out), problem)


def scale_writer(body: Mapping[str, Any]) -> str | None:
    """The field manager that last wrote ``spec.replicas`` through the scale subresource
    (``kubectl scale``, a scaler), from ``metadata.managedFields``; None when nobody did."""
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if entry.get("subresource") == "scale" and "f:replicas" in fields:
            return str(entry.get("manager") or "unknown")
    return None


def replicas_outside_range(body: Mapping[str, Any], autoscaling: Mapping[str, Any] | None) -> str | None:
    """Why the replica count is about to change: ``spec.replicas`` is outside the autoscaling range.

    With ``spec.autoscaling`` the HPA scales the ModelService through its scale subresource and
    moves ``spec.replicas`` back within [minReplicas, maxReplicas] at its next sync (every 15 s
    by default); until then the operator serves the value as written, as a Deployment under an
    HPA would. A note for status naming who wrote the value when it came through the scale
    subresource (``kubectl scale``); None when there is nothing to explain (no autoscaling, a
    value within range, or 0, which the HPA leaves alone: "scaling is disabled").
    """
    if not autoscaling:
        return None
    wanted = (body.get("spec") or {}).get("replicas")
    low, high = int(autoscaling.get("minReplicas", 1)), int(autoscaling.get("maxReplicas", 1))
    if wanted is None or int(wanted) == 0 or low <= int(wanted) <= high:
        return None
    writer = scale_writer(body)
    by = f" (scaled by {writer})" if writer else ""
    return (
        f"spec.replicas {wanted}{by} is outside spec.autoscaling's range {low}-{high}: "
        "the HorizontalPodAutoscaler scales it back within that range; change spec.autoscaling instead"
    )
