"""Pure tests of TrainingJob phase/condition derivation from a Job and its pods (no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubemaas_operator.controllers.trainingjob import observe as ts
from kubemaas_operator.controllers.trainingjob import spec as tjspec
from kubemaas_operator.controllers.trainingjob.reconcile import remaining_deadline, start_time

SHA = "ab" * 32


def pod(index: int, phase: str, *, message: str = "", exit_code: int | None = None,
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"tj-r0-{index}-xyz",
        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None or message:
        status["containerStatuses"] = [{
            "name": "trainer",
            "state": {"terminated": {"exitCode": exit_code or 0, "reason": "Error" if exit_code else "Completed",
                                     "message": message}},
        }]
    return {"metadata": meta, "status": status}


JOB: dict[str, Any] = {"metadata": {"name": "tj-r0"}, "spec": {}, "status": {}}


def assess(pods: list[dict[str, Any]], *, job: dict[str, Any] | None = JOB, restarts: int = 0,
           backoff_limit: int = 1, suspend: bool = False, replicas: int = 2,
           promises_artifact: bool = True) -> ts.Assessment:
    return ts.assess(replicas=replicas, restarts=restarts, backoff_limit=backoff_limit, suspend=suspend,
                     job=job, pods=pods, promises_artifact=promises_artifact)


def done_message(metrics: dict[str, Any] | None = None) -> str:
    return json.dumps({"artifact": {"uri": "pvc://models/tj", "sha256": SHA, "metrics": metrics or {"accuracy": 0.97}}})


def test_no_job_means_create() -> None:
    first = assess([], job=None)
    again = assess([], job=None, restarts=2)
    assert (first.phase, first.action) == ("Pending", "create")
    assert (again.phase, again.action) == ("Restarting", "create")


def test_suspended_before_start_still_creates_a_suspended_job() -> None:
    found = assess([], job=None, suspend=True)
    assert (found.phase, found.action) == ("Suspended", "create")


def test_running_needs_every_rank() -> None:
    half = assess([pod(0, "Running"), pod(1, "Pending")])
    full = assess([pod(0, "Running"), pod(1, "Running")])
    assert (half.phase, half.message) == ("Pending", "1/2 ranks running (generation r0)")
    assert (full.phase, full.action) == ("Running", "wait")
    assert full.replicas == ts.ReplicaCounts(active=2)


def test_all_ranks_succeeded_carries_rank0_artifact() -> None:
    found = assess([pod(0, "Succeeded", message=done_message({"accuracy": 0.97, "loss": 1})),
                    pod(1, "Succeeded")])
    assert (found.phase, found.action) == ("Succeeded", "finish")
    assert found.artifact == {"uri": "pvc://models/tj", "sha256": SHA, "metrics": {"accuracy": 0.97, "loss": 1.0}}
    assert found.replicas == ts.ReplicaCounts(succeeded=2)


def test_a_promised_artifact_that_is_unreadable_fails_the_run() -> None:
    found = assess([pod(0, "Succeeded", message="not json"), pod(1, "Succeeded")])
    assert (found.phase, found.reason, found.action, found.artifact) == ("Failed", "ArtifactMissing", "finish", None)
    assert "rank 0 reported no usable artifact: rank 0's termination message is not JSON" in found.message


def test_a_promised_artifact_without_a_checksum_fails_the_run() -> None:
    unsigned = json.dumps({"artifact": {"uri": "s3://b/x"}})
    found = assess([pod(0, "Succeeded", message=unsigned), pod(1, "Succeeded")])
    assert (found.phase, found.reason, found.artifact) == ("Failed", "ArtifactMissing", None)
    assert "artifact s3://b/x has no sha256" in found.message


def test_without_a_promise_success_needs_no_artifact_and_records_none_unsigned() -> None:
    unsigned = json.dumps({"artifact": {"uri": "s3://b/x"}})
    nothing = assess([pod(0, "Succeeded"), pod(1, "Succeeded")], promises_artifact=False)
    partial = assess([pod(0, "Succeeded", message=unsigned), pod(1, "Succeeded")], promises_artifact=False)
    assert (nothing.phase, nothing.artifact) == ("Succeeded", None)
    assert "no artifact (rank 0 wrote no termination message)" in nothing.message
    assert (partial.phase, partial.artifact) == ("Succeeded", None)


def test_ranks_are_counted_against_the_running_jobs_completions_not_the_edited_spec() -> None:
    job = {**JOB, "spec": {"completions": 2}}
    shrunk = assess([pod(0, "Succeeded", message=done_message()), pod(1, "Running")], job=job, replicas=1)
    grown = assess([pod(0, "Succeeded", message=done_message()), pod(1, "Succeeded")], job=job, replicas=3)
    assert (shrunk.phase, shrunk.artifact) == ("Running", None)
    assert (grown.phase, grown.message) == ("Succeeded", "all 2 ranks succeeded")


def test_one_failed_rank_restarts_the_gang_within_backoff() -> None:
    found = assess([pod(0, "Running"), pod(1, "Failed", exit_code=3, message="boom")], backoff_limit=2)
    assert (found.phase, found.action, found.reason) == ("Restarting", "restart", "RankFailed")
    assert found.message.startswith("rank 1 (pod tj-r0-1-xyz) failed: Error (exit code 3): boom")
    assert "(1/2)" in found.message


def test_failed_rank_after_backoff_limit_fails() -> None:
    found = assess([pod(0, "Failed", exit_code=1)], restarts=1, backoff_limit=1)
    assert (found.phase, found.action, found.reason) == ("Failed", "finish", "BackoffLimitExceeded")
    assert "runPolicy.backoffLimit 1 reached after 1 restarts" in found.message


def test_job_failure_without_pods_is_a_rank_failure() -> None:
    job = {**JOB, "status": {"failed": 1}}
    assert assess([], job=job).action == "restart"


def test_deadline_exceeded_is_final_even_with_backoff_left() -> None:
    job = {**JOB, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long"}]}}
    found = assess([pod(0, "Failed", exit_code=137)], job=job, backoff_limit=5)
    assert (found.phase, found.reason, found.action) == ("Failed", "DeadlineExceeded", "finish")


def test_suspended_ignores_pods_being_deleted() -> None:
    found = assess([pod(0, "Failed", deleting=True), pod(1, "Running", deleting=True)], suspend=True)
    assert (found.phase, found.action) == ("Suspended", "wait")
    assert found.replicas == ts.ReplicaCounts()
    resumed = assess([pod(0, "Failed", deleting=True)])
    assert resumed.action == "wait"


def test_parse_artifact_rejects_bad_checksum() -> None:
    bad = json.dumps({"artifact": {"uri": "s3://b/p", "sha256": "xyz"}})
    assert ts.parse_artifact(bad) == (None, "artifact.sha256 must be 64 lowercase hex digits, got 'xyz'")
    assert ts.parse_artifact(json.dumps({"artifact": {"uri": "s3://b/p"}})) == (
        {"uri": "s3://b/p", "metrics": {}}, "",
    )


def test_parse_artifact_keeps_the_bundle_size() -> None:
    sha = "a" * 64
    message = json.dumps({"artifact": {"uri": "s3://b/p", "sha256": sha, "metrics": {}, "sizeBytes": 123456}})
    assert ts.parse_artifact(message) == ({"uri": "s3://b/p", "sha256": sha, "metrics": {}, "sizeBytes": 123456}, "")


@pytest.mark.parametrize("size", [-1, "12MB", 1.5, True])
def test_parse_artifact_rejects_a_size_that_is_not_a_byte_count(size: object) -> None:
    message = json.dumps({"artifact": {"uri": "s3://b/p", "sizeBytes": size}})
    assert ts.parse_artifact(message) == (
        None, f"artifact.sizeBytes must be a non-negative integer, got {size!r}")


def test_desired_conditions_mark_only_the_phase_true() -> None:
    conds = ts.desired_conditions(assess([pod(0, "Running"), pod(1, "Running")]), created=True)
    assert {c.type: c.status for c in conds} == {
        "Created": "True", "Running": "True", "Restarting": "False",
        "Succeeded": "False", "Failed": "False", "Suspended": "False",
    }


def test_remaining_deadline_counts_from_the_first_start() -> None:
    spec = tjspec.parse_spec({"recipe": {"name": "digits"}, "runPolicy": {"activeDeadlineSeconds": 100}})
    assert remaining_deadline(spec, "2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z") == 100 - 90
    assert remaining_deadline(spec, None, "2026-01-01T00:01:30Z") == 100
    assert remaining_deadline(tjspec.parse_spec({}), "2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z") is None


def test_start_time_is_set_when_the_gang_first_runs_and_again_on_resume() -> None:
    now = "2026-01-01T00:00:25Z"
    assert start_time({}, True, now) is None  # created suspended: the clock has not started
    assert start_time({"phase": "Suspended"}, False, now) == now  # first resume
    resumed = {"phase": "Suspended", "startTime": "2026-01-01T00:00:00Z"}
    assert start_time(resumed, False, now) == now  # suspended time does not count
    running = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
    assert start_time(running, False, now) == "2026-01-01T00:00:00Z"
    assert start_time(running, True, now) == "2026-01-01T00:00:00Z"


def test_the_deadline_counts_from_the_resume() -> None:
    spec = tjspec.parse_spec({"recipe": {"name": "digits"}, "runPolicy": {"activeDeadlineSeconds": 20}})
    started = start_time({"phase": "Suspended"}, False, "2026-01-01T00:00:25Z")
    assert remaining_deadline(spec, started, "2026-01-01T00:00:30Z") == 20 - 5
