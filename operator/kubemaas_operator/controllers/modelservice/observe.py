"""Pure readings of observed objects: is a Deployment healthy, how did a Job end, and why.

Used for ModelService status; no I/O (the reconciler fetches, these functions judge).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubemaas_operator.manifests.common import ANNOTATION_SPEC_HASH

STUCK_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreCreateHookError",
        "PostStartHookError",
    }
)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentHealth:
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    available: bool
    rolled_out: bool
    problem: Problem | None


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def pod_attention(pod: Mapping[str, Any]) -> Literal["now", "later", "no"]:
    """Whether a pod event can change a ModelService's status beyond what its Deployment or Job says.

    "now": a container is stuck waiting or an init container failed; "later": a container runs
    but is not ready (it may turn into ReadinessProbeFailing); "no": the owner's events suffice.
    """
    status = pod.get("status") or {}
    verdict: Literal["now", "later", "no"] = "no"
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason") in STUCK_WAITING_REASONS:
                return "now"
            if key == "initContainerStatuses" and (state.get("terminated") or {}).get("exitCode", 0) != 0:
                return "now"
            if key == "containerStatuses" and state.get("running") and not cs.get("ready"):
                verdict = "later"
    return verdict


def pod_problem(pod: Mapping[str, Any], *, now: dt.datetime, stuck_after_s: float) -> Problem | None:
    """Why a pod cannot become ready, from its container statuses (None when it looks fine)."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for cs in status.get(key) or []:
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_WAITING_REASONS:
                detail = waiting.get("message") or ""
                last = ((cs.get("lastState") or {}).get("terminated") or {})
                if reason == "CrashLoopBackOff" and last.get("message"):
                    detail = f"{detail}; last exit {last.get('exitCode')}: {last['message']}".strip("; ")
                msg = f"pod {name} {kind} {cs.get('name')}: {reason}"
                return Problem(reason, f"{msg}: {detail}" if detail else msg)
            terminated = state.get("terminated") or {}
            if kind == "init container" and terminated and terminated.get("exitCode", 0) != 0:
                detail = (terminated.get("message") or terminated.get("reason") or "").strip()
                return Problem(
                    "StorageInitializerFailed",
                    f"pod {name} init container {cs.get('name')} exited {terminated.get('exitCode')}: {detail}",
                )
            running = state.get("running") or {}
            started = _parse_time(running.get("startedAt"))
            if (
                kind == "container"
                and running
                and not cs.get("ready")
                and started is not None
                and (now - started).total_seconds() > stuck_after_s
            ):
                return Problem(
                    "ReadinessProbeFailing",
                    f"pod {name} container {cs.get('name')} has been running unready since "
                    f"{running.get('startedAt')} (restarts: {cs.get('restartCount', 0)})",
                )
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Problem("Unschedulable", f"pod {name}: {scheduled.get('message', '')}")
    return None


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
    available_cond = _condition(deploy, "Available")
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
        progressing = _condition(deploy, "Progressing")
        failure = _condition(deploy, "ReplicaFailure")
        if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
            problem = Problem("ProgressDeadlineExceeded", str(progressing.get("message", "")))
        elif failure is not None and failure.get("status") == "True":
            problem = Problem(str(failure.get("reason") or "ReplicaFailure"), str(failure.get("message", "")))
    return DeploymentHealth(want, ready, updated, available_n, available, bool(rolled_out), problem)


JobState = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobOutcome:
    state: JobState
    message: str
    """The finished pod's termination message ("" when none)."""
    reason: str = ""


def job_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], container: str) -> JobOutcome:
    """How a Job ended (Running until a Complete/Failed condition), with its pod's termination message."""
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    message = termination_message(pods, container)
    if complete is not None and complete.get("status") == "True":
        return JobOutcome("Succeeded", message, "Complete")
    if failed is not None and failed.get("status") == "True":
        detail = message or str(failed.get("message") or "")
        return JobOutcome("Failed", detail, str(failed.get("reason") or "Failed"))
    return JobOutcome("Running", message)


def termination_message(pods: Sequence[Mapping[str, Any]], container: str) -> str:
    """The newest terminated ``container``'s termination message among ``pods``."""
    best: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != container:
                continue
            term = (cs.get("state") or {}).get("terminated") or {}
            msg = term.get("message")
            if msg:
                stamp = str(term.get("finishedAt") or "")
                if best is None or stamp >= best[0]:
                    best = (stamp, str(msg))
    return best[1] if best else ""


def scale_writer(body: Mapping[str, Any]) -> str | None:
    """The field manager that last wrote ``spec.replicas`` through the scale subresource
    (``kubectl scale``, a scaler), from ``metadata.managedFields``; None when nobody did."""
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if entry.get("subresource") == "scale" and "f:replicas" in fields:
            return str(entry.get("manager") or "unknown")
    return None


def ignored_scale(
    body: Mapping[str, Any], autoscaling: Mapping[str, Any] | None, observed_replicas: int
) -> str | None:
    """Why a ``kubectl scale`` did nothing: with ``spec.autoscaling`` the HPA owns the replicas.

    A note for status (not a failure) when spec.replicas was written through the scale
    subresource and differs from what is running; None otherwise.
    """
    if not autoscaling:
        return None
    writer = scale_writer(body)
    wanted = (body.get("spec") or {}).get("replicas")
    if writer is None or wanted is None or int(wanted) == observed_replicas:
        return None
    low, high = autoscaling.get("minReplicas", 1), autoscaling.get("maxReplicas")
    return (
        f"spec.replicas {wanted} (scaled by {writer}) is ignored: the HorizontalPodAutoscaler owns "
        f"replicas ({low}-{high}, now {observed_replicas}); change spec.autoscaling instead"
    )
