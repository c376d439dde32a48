"""Pure status logic: conditions, Deployment health, compression reports, lineage resolution."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kubemaas_operator.controllers.modelservice import artifact, compress
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.controllers.modelservice.observe import DeploymentHealth, deployment_health
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.controllers.modelservice.status import Observed, build_status
from kubemaas_operator.kube import conditions as status
from kubemaas_operator.kube.observe import Problem, job_outcome, pod_problem
from kubemaas_operator.kube.patching import status_patch

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
SOURCE = ServingBundle(uri="pvc://m/x", sha256="a" * 64, source=("TrainingJob", "ml", "train"))
BASE = {"job": "digits-compress-12345678", "mode": "auto", "maxAccuracyDrop": 0.01, "sourceSha256": "a" * 64}


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = status.merge_conditions(None, [status.false("Ready", "RollingOut", "0/1")], generation=1, now="T1")
    same = status.merge_conditions(first, [status.false("Ready", "ImagePullBackOff", "x")], generation=2, now="T2")
    flipped = status.merge_conditions(same, [status.true("Ready", "ModelServing")], generation=2, now="T3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["T1", "T1", "T3"]
    assert same[0] == {"type": "Ready", "status": "False", "reason": "ImagePullBackOff", "message": "x",
                       "lastTransitionTime": "T1", "observedGeneration": 2}


def pod(name: str, *, waiting: str | None = None, ready: bool = False, started: str | None = None,
        init_exit: int | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "kserve-container", "ready": ready, "restartCount": 0, "state": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": "back-off pulling image \"nope:1\""}}
    elif started:
        cs["state"] = {"running": {"startedAt": started}}
    st: dict[str, Any] = {"containerStatuses": [cs]}
    if init_exit is not None:
        st["initContainerStatuses"] = [{"name": "storage-initializer", "state": {
            "terminated": {"exitCode": init_exit, "message": "model.json: sha256 mismatch"}}}]
    return {"metadata": {"name": name, "annotations": {}}, "status": st}


def test_pod_problems_name_the_reason() -> None:
    assert pod_problem(pod("p", waiting="ImagePullBackOff"), now=NOW, stuck_after_s=60) == Problem(
        "ImagePullBackOff", 'pod p container kserve-container: ImagePullBackOff: back-off pulling image "nope:1"'
    )
    assert pod_problem(pod("p", waiting="ContainerCreating"), now=NOW, stuck_after_s=60) is None
    stuck = pod_problem(pod("p", started="2026-01-01T11:50:00Z"), now=NOW, stuck_after_s=60)
    assert stuck is not None
    assert stuck.reason == "ReadinessProbeFailing"
    assert pod_problem(pod("p", started="2026-01-01T11:59:30Z"), now=NOW, stuck_after_s=60) is None
    fetch = pod_problem(pod("p", init_exit=1), now=NOW, stuck_after_s=60)
    assert fetch is not None
    assert fetch.reason == "StorageInitializerFailed"
    assert "sha256 mismatch" in fetch.message


def deploy(replicas: int = 2, ready: int = 2, updated: int = 2, total: int = 2, **conds: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3, "annotations": {"kubemaas.io/spec-hash": "h1"}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 3, "replicas": total, "readyReplicas": ready, "availableReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": t, "status": s, "reason": r} for t, (s, r) in conds.items()],
        },
    }


def test_deployment_health_rollout_and_deadline() -> None:
    ok = deployment_health(deploy(Available=("True", "MinimumReplicasAvailable")), [], desired_hash="h1", now=NOW)
    assert (ok.available, ok.rolled_out, ok.problem) == (True, True, None)
    mid = deployment_health(deploy(updated=1, total=3), [], desired_hash="h1", now=NOW)
    assert (mid.available, mid.rolled_out) == (True, False)
    stale = deployment_health(deploy(), [], desired_hash="h2", now=NOW)
    assert stale.rolled_out is False
    stuck = deployment_health(deploy(ready=0, Progressing=("False", "ProgressDeadlineExceeded")), [],
                              desired_hash="h1", now=NOW)
    assert stuck.problem is not None
    assert stuck.problem.reason == "ProgressDeadlineExceeded"


def test_job_outcome_reads_the_termination_message() -> None:
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pods = [{"status": {"containerStatuses": [{"name": "compress", "state": {"terminated": {
        "exitCode": 0, "message": '{"selected": "fp16"}', "finishedAt": "2026-01-01T00:00:00Z"}}}]}}]
    assert job_outcome(done, pods, "compress").state == "Succeeded"
    assert job_outcome(done, pods, "compress").message == '{"selected": "fp16"}'
    assert job_outcome({"status": {}}, [], "compress").state == "Running"


def report(selected: str | None, drop: float) -> str:
    return json.dumps({
        "selected": selected, "reason": "fastest within budget" if selected else "gate",
        "bundle": {"uri": "pvc://store/x", "sha256": "b" * 64} if selected else None,
        "variants": [{"name": "int8-static", "sizeBytes": 100, "accuracyDrop": drop, "passed": selected is not None}],
    })


def test_selected_variant_becomes_the_serving_bundle_with_lineage() -> None:
    result = compress.judge_report(BASE, "Succeeded", report("int8-static", 0.004), SOURCE, 0.01)
    assert result.condition.ok
    assert result.condition.reason == "VariantSelected"
    assert result.serving == ServingBundle(
        uri="pvc://store/x", sha256="b" * 64, variant="int8-static", size_bytes=100,
        source_uri="pvc://m/x", source_sha256="a" * 64, source=("TrainingJob", "ml", "train"),
    )
    assert result.status is not None
    assert result.status["state"] == "Succeeded"
    assert result.status["selected"] == "int8-static"
    again = compress.from_status(result.status, SOURCE, 0.01)
    assert again.serving == result.serving


def test_failed_gate_names_the_drop() -> None:
    result = compress.judge_report(BASE, "Failed", report(None, 0.0512), SOURCE, 0.01)
    assert (result.condition.ok, result.condition.reason, result.failed) == (False, "AccuracyGateFailed", True)
    assert result.condition.message == "no variant within maxAccuracyDrop 0.01: int8-static drop 0.0512 (failed)"
    assert result.serving is None
    crash = compress.judge_report(BASE, "Failed", "Traceback: boom", SOURCE, 0.01)
    assert crash.condition.reason == "CompressionFailed"
    assert "boom" in crash.condition.message


def test_training_job_resolution() -> None:
    missing = artifact.resolve_training_job("ml", "train", None)
    assert (missing.condition.reason, missing.bundle) == ("WaitingForTraining", None)
    running = artifact.resolve_training_job("ml", "train", {"status": {"phase": "Running"}})
    assert running.condition.reason == "WaitingForTraining"
    assert "phase Running" in running.condition.message
    done = artifact.resolve_training_job(
        "ml", "train", {"status": {"phase": "Succeeded", "artifact": {"uri": "pvc://m/x", "sha256": "a" * 64}}}
    )
    assert done.condition.ok
    assert done.bundle == SOURCE
    failed = artifact.resolve_training_job("ml", "train", {"status": {"phase": "Failed", "message": "OOM"}})
    assert (failed.condition.reason, failed.fatal) == ("TrainingFailed", True)


def build(health: DeploymentHealth, *, comp: compress.CompressionResult | None = None,
          old: dict[str, Any] | None = None) -> dict[str, Any]:
    art = artifact.resolve_training_job(
        "ml", "train", {"status": {"phase": "Succeeded", "artifact": {"uri": "pvc://m/x", "sha256": "a" * 64}}}
    )
    return build_status(Observed(
        name="digits", namespace="ml", generation=4, old=old or {}, spec=parse_modelservice({"model": {"uri": "x"}}),
        artifact=art, comp=comp, serving=SOURCE, deployed=True, health=health, observed_replicas=health.replicas,
    ), now="T")


def test_ready_status_has_url_model_and_no_reason() -> None:
    st = build(DeploymentHealth(2, 2, 2, 2, True, True, None))
    assert st["phase"] == "Ready"
    assert st["url"] == "http://digits.ml.svc.cluster.local/v2/models/digits"
    assert (st["reason"], st["message"]) == (None, None)
    assert [c["status"] for c in st["conditions"]] == ["True", "True", "True", "True"]
    assert st["model"]["source"] == {"kind": "TrainingJob", "namespace": "ml", "name": "train"}
    assert st["observedGeneration"] == 4


def test_stuck_rollout_puts_the_pod_reason_in_reason() -> None:
    health = DeploymentHealth(2, 0, 1, 0, False, False, Problem("ImagePullBackOff", "pod p: nope"))
    st = build(health)
    assert (st["phase"], st["reason"], st["message"]) == ("Failed", "ImagePullBackOff", "pod p: nope")


def test_gate_failure_keeps_old_revision_but_is_not_ready() -> None:
    comp = compress.judge_report(BASE, "Failed", report(None, 0.2), SOURCE, 0.01)
    st = build(DeploymentHealth(1, 1, 1, 1, True, True, None), comp=comp)
    assert (st["phase"], st["reason"]) == ("Failed", "AccuracyGateFailed: best drop 20pt (int8-static) > 1pt")
    assert "drop 0.2000" in st["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AccuracyGateFailed"  # conditions keep the metav1 CamelCase reason
    available = next(c for c in st["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"


def test_status_patch_is_none_when_unchanged_and_deletes_stale_keys() -> None:
    st = build(DeploymentHealth(1, 1, 1, 1, True, True, None))
    stored = {k: v for k, v in st.items() if v is not None}
    assert status_patch(stored, st) is None
    old = {**stored, "reason": "RollingOut", "model": {**stored["model"], "sizeBytes": 5}}
    patch = status_patch(old, st)
    assert patch == {"reason": None, "model": {**st["model"], "sizeBytes": None}}


def test_status_patch_compares_with_what_the_server_stores() -> None:
    comp = compress.judge_report(BASE, "Failed", report(None, 0.2), SOURCE, 0.01)
    assert comp.status is not None
    assert comp.status["selected"] is None  # a merge patch deletes it; the server never stores null
    new = {"compression": comp.status}
    stored = {"compression": {k: v for k, v in comp.status.items() if v is not None}}
    assert status_patch(stored, new) is None
