"""What a TrainingJob's current gang is doing, derived from its Job and pods. Pure.

``assess()`` looks at the current generation's Job and pods (already filtered to that
generation by the caller) and returns the phase, the counts, the artifact and what the
operator should do next:

- ``wait``: nothing to do (Pending, Running, Restarting, Suspended);
- ``create``: no Job for this generation yet;
- ``restart``: a rank failed and ``restarts < backoffLimit``: start generation restarts+1;
- ``finish``: Succeeded or Failed, terminal (the phase never changes again).

Order of precedence: deadline exceeded > all ranks succeeded > suspended > a failed rank >
all ranks running > pending. Pods being deleted (``deletionTimestamp`` set, e.g. by
suspension) count as neither active nor failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kubemaas_operator.controllers.trainingjob.children import COMPLETION_INDEX, CONTAINER
from kubemaas_operator.kube import conditions as status
from kubemaas_operator.kube.conditions import Condition
from kubemaas_operator.kube.observe import condition_true, terminated

Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
Action = Literal["wait", "create", "restart", "finish"]
CONDITION_TYPES: tuple[Phase | Literal["Created"], ...] = (
    "Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended",
)
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MESSAGE_LIMIT = 512


@dataclass(frozen=True)
class ReplicaCounts:
    """status.replicaStatuses: pods active, ranks succeeded, pods failed (of the current generation)."""
    active: int = 0
    succeeded: int = 0
    failed: int = 0

    def as_status(self) -> dict[str, int]:
        """The ``status.replicaStatuses`` object."""
        return {"active": self.active, "succeeded": self.succeeded, "failed": self.failed}


@dataclass(frozen=True)
class Assessment:
    """What ``assess`` found: phase, reason, message, the next action, counts and the artifact."""
    phase: Phase
    reason: str
    message: str
    action: Action
    replicas: ReplicaCounts = field(default_factory=ReplicaCounts)
    artifact: dict[str, Any] | None = None


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def rank_of(pod: Mapping[str, Any]) -> int | None:
    """The pod's completion index (node rank), from the job controller's annotation or label."""
    for where in ("annotations", "labels"):
        value = _get(pod, "metadata", where, COMPLETION_INDEX)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _deleting(pod: Mapping[str, Any]) -> bool:
    return bool(_get(pod, "metadata", "deletionTimestamp"))


def _phase(pod: Mapping[str, Any]) -> str:
    return str(_get(pod, "status", "phase") or "Pending")


def count_replicas(pods: Sequence[Mapping[str, Any]]) -> ReplicaCounts:
    """Active = Pending/Running and not being deleted; succeeded counts distinct ranks."""
    active = sum(1 for p in pods if _phase(p) in ("Pending", "Running") and not _deleting(p))
    succeeded = len({rank_of(p) for p in pods if _phase(p) == "Succeeded"})
    failed = sum(1 for p in pods if _phase(p) == "Failed" and not _deleting(p))
    return ReplicaCounts(active=active, succeeded=succeeded, failed=failed)


def termination_message(pod: Mapping[str, Any]) -> str:
    """The trainer container's termination message in ``pod`` ("" when none)."""
    term = terminated(pod, CONTAINER)
    return str(term.get("message") or "") if term else ""


def parse_artifact(message: str) -> tuple[dict[str, Any] | None, str]:
    """(artifact, problem) from rank 0's termination message (contract 3).

    ``problem`` is "" when the artifact is well formed, else says what is wrong with it.
    ``sizeBytes`` (optional): the bytes a fetch of the bundle writes; a ModelService sizes its
    model volume from it (``modelservice.storage``).
    """
    if not message.strip():
        return None, "rank 0 wrote no termination message"
    try:
        doc = json.loads(message)
    except json.JSONDecodeError as exc:
        return None, f"rank 0's termination message is not JSON ({exc.msg}): {message[:80]!r}"
    artifact = doc.get("artifact") if isinstance(doc, dict) else None
    if not isinstance(artifact, dict):
        return None, "rank 0's termination message has no 'artifact' object"
    uri = artifact.get("uri")
    if not isinstance(uri, str) or not uri:
        return None, f"artifact.uri must be a non-empty string, got {uri!r}"
    out: dict[str, Any] = {"uri": uri}
    sha = artifact.get("sha256")
    if sha is not None:
        if not isinstance(sha, str) or not _SHA256.match(sha):
            return None, f"artifact.sha256 must be 64 lowercase hex digits, got {sha!r}"
        out["sha256"] = sha
    metrics = artifact.get("metrics") or {}
    if not isinstance(metrics, dict):
        return None, f"artifact.metrics must be an object, got {metrics!r}"
    numbers = {
        str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    out["metrics"] = numbers
    size = artifact.get("sizeBytes")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None, f"artifact.sizeBytes must be a non-negative integer, got {size!r}"
        out["sizeBytes"] = size
    return out, ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _failure(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> str | None:
    """A message describing the first failed rank, or None when no rank failed."""
    failed = sorted(
        (p for p in pods if _phase(p) == "Failed" and not _deleting(p)),
        key=lambda p: (rank_of(p) is None, rank_of(p) or 0),
    )
    if failed:
        pod = failed[0]
        term = terminated(pod, CONTAINER) or {}
        why = str(term.get("reason") or _get(pod, "status", "reason") or "Failed")
        code = term.get("exitCode")
        detail = termination_message(pod) or str(_get(pod, "status", "message") or "")
        text = f"rank {rank_of(pod)} (pod {_get(pod, 'metadata', 'name')}) failed: {why}"
        if code is not None:
            text += f" (exit code {code})"
        return text + (f": {detail}" if detail else "")
    cond = condition_true(job, "Failed") or condition_true(job, "FailureTarget")
    if cond is not None:
        return f"Job {_get(job or {}, 'metadata', 'name')} failed: {cond.get('reason')}: {cond.get('message', '')}"
    if int(_get(job or {}, "status", "failed") or 0) > 0:
        return f"Job {_get(job or {}, 'metadata', 'name')} reports a failed pod"
    return None


def assess(
    *,
    replicas: int,
    restarts: int,
    backoff_limit: int,
    suspend: bool,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    promises_artifact: bool = True,
) -> Assessment:
    """The current generation's state and the operator's next action (see the module doc).

    ``replicas`` is the spec's; once the generation's Job exists its own ``completions`` counts
    (the gang that actually runs). ``promises_artifact``: rank 0 must report an artifact with a
    sha256, else the run fails (``TrainingJobSpec.promises_artifact``).
    """
    counts = count_replicas(pods)
    if job is not None:
        replicas = int((job.get("spec") or {}).get("completions") or replicas)
    generation = f"generation r{restarts}"
    if job is None:
        if suspend:
            return Assessment("Suspended", "Suspended", "suspended; holds no pods", "create", counts)
        phase: Phase = "Restarting" if restarts > 0 else "Pending"
        return Assessment(phase, "Creating", f"creating the gang ({generation})", "create", counts)

    deadline = condition_true(job, "Failed") or condition_true(job, "FailureTarget")
    if deadline is not None and deadline.get("reason") == "DeadlineExceeded":
        return Assessment(
            "Failed", "DeadlineExceeded",
            _clip(f"runPolicy.activeDeadlineSeconds exceeded: {deadline.get('message', '')}"),
            "finish", counts,
        )

    done = {rank_of(p) for p in pods if _phase(p) == "Succeeded"}
    if condition_true(job, "Complete") is not None or done >= set(range(replicas)):
        return _finished(replicas, pods, counts, promises_artifact)

    if suspend:
        msg = "suspended; holds no pods" if counts.active == 0 else f"suspending: {counts.active} pods terminating"
        return Assessment("Suspended", "Suspended", msg, "wait", counts)

    failure = _failure(job, pods)
    if failure is not None:
        if restarts < backoff_limit:
            return Assessment(
                "Restarting", "RankFailed",
                _clip(f"{failure}; restarting the gang ({restarts + 1}/{backoff_limit})"),
                "restart", counts,
            )
        return Assessment(
            "Failed", "BackoffLimitExceeded",
            _clip(f"{failure}; runPolicy.backoffLimit {backoff_limit} reached after {restarts} restarts"),
            "finish", counts,
        )

    up = {rank_of(p) for p in pods if _phase(p) in ("Running", "Succeeded") and not _deleting(p)}
    running = sum(1 for p in pods if _phase(p) == "Running" and not _deleting(p))
    if running and up >= set(range(replicas)):
        return Assessment("Running", "AllRanksRunning", f"{running}/{replicas} ranks running ({generation})",
                          "wait", counts)
    phase = "Restarting" if restarts > 0 else "Pending"
    return Assessment(phase, "WaitingForRanks",
                      f"{len(up & set(range(replicas)))}/{replicas} ranks running ({generation})", "wait", counts)


def _finished(
    replicas: int, pods: Sequence[Mapping[str, Any]], counts: ReplicaCounts, promises_artifact: bool
) -> Assessment:
    """Every rank succeeded: Succeeded with rank 0's artifact, or Failed when a promised one is missing."""
    rank0 = next((p for p in pods if _phase(p) == "Succeeded" and rank_of(p) == 0), None)
    artifact, problem = parse_artifact(termination_message(rank0) if rank0 else "")
    if artifact is not None and "sha256" not in artifact:
        problem = f"artifact {artifact['uri']} has no sha256"
        artifact = None
    message = f"all {replicas} ranks succeeded"
    if problem and promises_artifact:
        why = f"{message}, but rank 0 reported no usable artifact: {problem} (the recipe or spec.output.uri promises one)"
        return Assessment("Failed", "ArtifactMissing", _clip(why), "finish", counts)
    if problem:
        message += f"; no artifact ({problem})"
    return Assessment("Succeeded", "AllRanksSucceeded", _clip(message), "finish", counts, artifact)


def desired_conditions(assessment: Assessment, *, created: bool) -> list[Condition]:
    """All six condition types: the current phase's is True, the others False; Created is
    True once the gang's first Job exists. ``status.merge_conditions`` adds the timestamps."""
    out = [
        status.true("Created", "JobCreated", "the gang's Job was created")
        if created
        else status.false("Created", "NotCreated", "no Job yet")
    ]
    for kind in CONDITION_TYPES[1:]:
        if assessment.phase == kind:
            out.append(status.true(kind, assessment.reason, assessment.message))
        elif kind == "Running" and assessment.phase in ("Pending", "Restarting"):
            # Why the gang does not run yet (WaitingForRanks, FailedCreate, Conflict, ...).
            out.append(status.false(kind, assessment.reason, assessment.message))
        else:
            out.append(status.false(kind, f"Not{kind}"))
    return out
