"""Pure readings of observed objects shared by both controllers: conditions on objects, times,
termination messages, why a pod is stuck, how a Job ended. No I/O (controllers fetch, these judge).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubemaas_operator.kube.conditions import find

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
    """Why something is not progressing: a CamelCase ``reason`` (the REASON column) and a sentence."""

    reason: str
    message: str


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as the API writes it (``2024-01-02T03:04:05Z``) -> aware datetime; None if absent or bad."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The ``status.conditions`` entry of ``type_`` of an object (any status), or None."""
    return find(((obj or {}).get("status") or {}).get("conditions"), type_)


def condition_true(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The ``status.conditions`` entry of ``type_`` when its status is True, else None."""
    cond = condition(obj, type_)
    return cond if cond is not None and cond.get("status") == "True" else None


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
            started = parse_time(running.get("startedAt"))
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
    scheduled = condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Problem("Unschedulable", f"pod {name}: {scheduled.get('message', '')}")
    return None


JobState = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobOutcome:
    """How a Job ended (or that it still runs), with its pod's termination message."""
    state: JobState
    message: str
    """The finished pod's termination message ("" when none)."""
    reason: str = ""


def job_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], container: str) -> JobOutcome:
    """How a Job ended (Running until a Complete/Failed condition), with its pod's termination message."""
    complete = condition(job, "Complete")
    failed = condition(job, "Failed")
    message = termination_message(pods, container)
    if complete is not None and complete.get("status") == "True":
        return JobOutcome("Succeeded", message, "Complete")
    if failed is not None and failed.get("status") == "True":
        detail = message or str(failed.get("message") or "")
        return JobOutcome("Failed", detail, str(failed.get("reason") or "Failed"))
    return JobOutcome("Running", message)


def terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    """``container``'s last termination record in ``pod`` (its current state, else lastState), or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            return state if isinstance(state, Mapping) else None
    return None


def termination_message(pods: Sequence[Mapping[str, Any]], container: str) -> str:
    """The newest termination message of ``container`` among ``pods`` ("" when none wrote one)."""
    best: tuple[str, str] | None = None
    for pod in pods:
        term = terminated(pod, container) or {}
        msg = term.get("message")
        if msg:
            stamp = str(term.get("finishedAt") or "")
            if best is None or stamp >= best[0]:
                best = (stamp, str(msg))
    return best[1] if best else ""


REFUSAL_REASONS = frozenset({"FailedCreate"})
"""Event reasons by which a controller (the Job controller, the ReplicaSet controller) says the API
refused the pods it tried to create (a ResourceQuota, a LimitRange, pod admission)."""


def refusal(events: Sequence[Mapping[str, Any]]) -> Problem | None:
    """The newest pod-creation refusal among a child's Events (``kubectl describe job``), or None."""
    refusals = [e for e in events if e.get("reason") in REFUSAL_REASONS and e.get("type") == "Warning"]
    if not refusals:
        return None
    newest = max(refusals, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    obj = newest.get("involvedObject") or {}
    return Problem(str(newest["reason"]), f"{obj.get('kind', 'Job')} {obj.get('name', '?')}: {newest.get('message', '')}")
