"""Canary rollouts by the real operator on the kwok tier: children, status, history, Events.

The control plane is real (etcd, kube-apiserver, controller-manager, scheduler) and
``kubemaas operator`` runs as a subprocess; kwok simulates the kubelet, so pods become Ready
without running ``kubemaas serve``. The operator cannot scrape kwok's pods, so every analysis
interval is inconclusive here: these tests drive the outcomes through the
``kubemaas.io/rollout`` annotation (promote / abort), as ``kubectl argo rollouts`` users do.
The verdicts on real traffic are tested against real servers in test_rollout_serve.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess, condition, get_json, poll, set_pod_status

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROLLOUT = {"strategy": "Canary", "steps": [{"weight": 25, "hold": "1h"}, {"weight": 50, "hold": "1h"}]}


def apply(plane: ControlPlane, ns: str, uri: str, rollout: dict[str, Any] = ROLLOUT) -> None:
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "m"},
           "spec": {"model": {"uri": uri}, "replicas": 4, "rollout": rollout}}
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def msvc(plane: ControlPlane, ns: str) -> Any:
    return get_json(plane, "modelservice", "m", "-n", ns)


def rollout_in(plane: ControlPlane, ns: str, phase: str, timeout: float = 60) -> Any:
    def reached() -> Any:
        obj = msvc(plane, ns)
        return obj if ((obj or {}).get("status") or {}).get("rollout", {}).get("phase") == phase else None

    return poll(reached, timeout=timeout, what=f"ModelService {ns}/m rollout phase {phase}")


def fetched(deploy: Any) -> str:
    return str(deploy["spec"]["template"]["spec"]["initContainers"][0]["args"][1])


def deploy(plane: ControlPlane, ns: str, name: str) -> Any:
    return get_json(plane, "deployment", name, "-n", ns)


def annotate(plane: ControlPlane, ns: str, command: str) -> None:
    plane.kubectl("annotate", "msvc", "m", "-n", ns, f"kubemaas.io/rollout={command}", "--overwrite")


def reasons(plane: ControlPlane, ns: str) -> list[str]:
    events = get_json(plane, "events", "-n", ns, "--field-selector", "involvedObject.kind=ModelService") or {}
    return [e["reason"] for e in events.get("items", [])]


def start_canary(plane: ControlPlane, ns: str) -> Any:
    apply(plane, ns, "s3://bucket/v1")
    first = rollout_in(plane, ns, "Stable")
    assert [(h["outcome"], h["why"]) for h in first["status"]["history"]] == [("Deployed", "first revision")]
    poll(lambda: condition(msvc(plane, ns), "Ready")["status"] == "True", timeout=60, what="v1 Ready")  # type: ignore[index]
    apply(plane, ns, "s3://bucket/v2")
    return rollout_in(plane, ns, "Progressing")


def test_canary_runs_beside_stable_and_abort_rolls_it_back(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    obj = start_canary(control_plane, ns)
    st = obj["status"]["rollout"]
    assert (st["column"], st["weight"], st["canary"]["uri"], st["stable"]["uri"]) == (
        "canary 25%", 25, "s3://bucket/v2", "s3://bucket/v1")
    canary = poll(lambda: deploy(control_plane, ns, "m-canary"), timeout=30, what="the canary Deployment")
    assert (fetched(canary), canary["spec"]["replicas"]) == ("s3://bucket/v2", 1)
    assert canary["spec"]["selector"]["matchLabels"]["kubemaas.io/track"] == "canary"
    stable = poll(lambda: (d := deploy(control_plane, ns, "m")) and d["spec"]["replicas"] == 3 and d,
                  timeout=30, what="stable at 3 replicas")
    assert fetched(stable) == "s3://bucket/v1"  # stable untouched while the canary is judged
    split = msvc(control_plane, ns)["status"]["rollout"]["split"]
    assert (split["stable"], split["canary"], split["effectiveWeight"]) == (3, 1, 25.0)
    table = control_plane.kubectl("get", "msvc", "m", "-n", ns).stdout.splitlines()
    assert table[0].split()[4] == "ROLLOUT"
    assert "canary 25%" in table[1]
    # the Service selects both tracks: canary pods are behind it
    svc = get_json(control_plane, "service", "m", "-n", ns)
    assert "kubemaas.io/track" not in svc["spec"]["selector"]

    annotate(control_plane, ns, "abort")
    obj = rollout_in(control_plane, ns, "RolledBack")
    st = obj["status"]
    assert st["rollout"]["reason"] == "aborted by annotation kubemaas.io/rollout=abort"
    assert st["rollout"]["column"] == "rolled back"
    assert (st["history"][-1]["outcome"], st["history"][-1]["uri"]) == ("Aborted", "s3://bucket/v2")
    assert condition(obj, "RolledBack")["status"] == "True"  # type: ignore[index]
    assert "kubemaas.io/rollout" not in (obj["metadata"].get("annotations") or {})
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 0, timeout=30, what="canary at 0")
    stable = poll(lambda: (d := deploy(control_plane, ns, "m")) and d["spec"]["replicas"] == 4 and d,
                  timeout=30, what="stable back at 4 replicas")
    assert fetched(stable) == "s3://bucket/v1"
    assert st["model"]["uri"] == "s3://bucket/v1"
    poll(lambda: {"CanaryStarted", "Aborted"} <= set(reasons(control_plane, ns)), timeout=30, what="Events")

    # the same artifact under the same spec is not retried, even after a forced resync
    control_plane.kubectl("annotate", "msvc", "m", "-n", ns, "touch=1")
    obj = rollout_in(control_plane, ns, "RolledBack")
    assert obj["status"]["rollout"]["canary"] is None if "canary" in obj["status"]["rollout"] else True


def test_promote_full_moves_stable_to_the_canary_revision(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    start_canary(control_plane, ns)
    annotate(control_plane, ns, "promote")  # skips the 1h hold of step 1
    obj = poll(lambda: (o := msvc(control_plane, ns)) and o["status"]["rollout"]["step"] == 1 and o,
               timeout=60, what="step 2")
    assert obj["status"]["rollout"]["column"] == "canary 50%"
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 2, timeout=30, what="canary at 2")
    annotate(control_plane, ns, "promote-full")
    obj = rollout_in(control_plane, ns, "Stable", timeout=90)
    st = obj["status"]
    assert st["rollout"]["stable"]["uri"] == "s3://bucket/v2"
    assert [h["outcome"] for h in st["history"]] == ["Deployed", "Promoted"]
    stable = deploy(control_plane, ns, "m")
    assert (fetched(stable), stable["spec"]["replicas"]) == ("s3://bucket/v2", 4)
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 0, timeout=30, what="canary at 0")
    poll(lambda: {"Promoting", "Promoted"} <= set(reasons(control_plane, ns)), timeout=30, what="Events")


def finish_run(plane: ControlPlane, ns: str, uri: str, sha: str) -> None:
    """Rank 0 of TrainingJob ``t`` exits 0 reporting ``uri``/``sha`` (what a kubelet would write)."""

    def running() -> Any:
        items = (get_json(plane, "pods", "-n", ns, "-l", "kubemaas.io/trainingjob=t") or {}).get("items") or []
        live = [p for p in items if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return live[0]["metadata"]["name"] if live else None

    pod = poll(running, timeout=60, what="rank 0 of TrainingJob t running")
    now = "2026-01-01T00:00:00Z"
    message = json.dumps({"artifact": {"uri": uri, "sha256": sha, "metrics": {"accuracy": 0.9}}})
    set_pod_status(plane, ns, pod, {
        "phase": "Succeeded",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": "trainer", "image": "kubemaas/training:test", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message,
                                     "startedAt": now, "finishedAt": now}},
        }],
    })


def train(plane: ControlPlane, ns: str, uri: str) -> None:
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t"},
           "spec": {"replicas": 1, "recipe": {"name": "digits"}, "output": {"uri": uri}}}
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def test_a_new_training_run_goes_through_the_canary(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """Lineage: a retrained model reaches clients only through the canary steps."""
    ns = namespace
    run1, run2 = "a1" * 32, "b2" * 32
    train(control_plane, ns, "s3://bucket/run1")
    finish_run(control_plane, ns, "s3://bucket/run1", run1)
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "m"},
           "spec": {"model": {"trainingJobRef": {"name": "t"}}, "replicas": 2, "rollout": ROLLOUT}}
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    first = rollout_in(control_plane, ns, "Stable")
    assert first["status"]["rollout"]["stable"]["sha256"] == run1

    # the same TrainingJob trained again (a new run: deleted and re-applied) with a new artifact
    control_plane.kubectl("delete", "trainingjob", "t", "-n", ns, "--wait=true")
    train(control_plane, ns, "s3://bucket/run2")
    finish_run(control_plane, ns, "s3://bucket/run2", run2)
    obj = rollout_in(control_plane, ns, "Progressing", timeout=90)
    st = obj["status"]["rollout"]
    # 2 replicas at 25 %: ceil(0.5) = 1 canary pod beside 1 stable pod, so half the traffic
    assert (st["canary"]["sha256"], st["stable"]["sha256"], st["column"]) == (run2, run1, "canary 25% (1/2 pods)")
    canary = poll(lambda: deploy(control_plane, ns, "m-canary"), timeout=30, what="the canary Deployment")
    assert fetched(canary) == "s3://bucket/run2"
    assert fetched(deploy(control_plane, ns, "m")) == "s3://bucket/run1"
    annotate(control_plane, ns, "abort")
    obj = rollout_in(control_plane, ns, "RolledBack")
    assert [(h["sha256"], h["outcome"]) for h in obj["status"]["history"]] == [(run1, "Deployed"), (run2, "Aborted")]


def test_canary_that_crash_loops_is_rolled_back(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """A model that does not even load never gets past its canary pods."""
    ns = namespace
    start_canary(control_plane, ns)

    def canary_pod() -> Any:
        items = (get_json(control_plane, "pods", "-n", ns, "-l", "kubemaas.io/track=canary") or {}).get("items") or []
        return items[0]["metadata"]["name"] if items else None

    pod = poll(canary_pod, timeout=60, what="a canary pod")
    set_pod_status(control_plane, ns, pod, {"containerStatuses": [{
        "name": "kserve-container", "image": "kubemaas/serving:test", "imageID": "", "ready": False,
        "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": {"exitCode": 1, "message": "model.onnx: checksum mismatch"}},
    }]})
    obj = rollout_in(control_plane, ns, "RolledBack")
    why = obj["status"]["rollout"]["reason"]
    assert why.startswith("canary cannot become ready: CrashLoopBackOff: pod m-canary-")
    assert "checksum mismatch" in why
    # The write that records the rollback can still see the stable Deployment converging after
    # the canary's removal (REASON RollingOut); once stable is Ready, REASON says what happened.
    obj = poll(lambda: (o := msvc(control_plane, ns)) and o["status"].get("reason", "").startswith("RolledBack") and o,
               timeout=60, what="REASON RolledBack once stable is Ready")
    assert obj["status"]["reason"] == f"RolledBack: {why}"
    assert fetched(deploy(control_plane, ns, "m")) == "s3://bucket/v1"


def test_rolling_update_is_the_default_and_keeps_a_history(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    apply(control_plane, ns, "s3://bucket/v1", rollout={})
    rollout_in(control_plane, ns, "Stable")
    apply(control_plane, ns, "s3://bucket/v2", rollout={})
    obj = poll(lambda: (o := msvc(control_plane, ns)) and len(o["status"].get("history") or []) == 2 and o,
               timeout=60, what="a second history entry")
    assert [(h["uri"], h["outcome"], h["why"]) for h in obj["status"]["history"]] == [
        ("s3://bucket/v1", "Deployed", "first revision"), ("s3://bucket/v2", "Promoted", "RollingUpdate strategy")]
    assert fetched(deploy(control_plane, ns, "m")) == "s3://bucket/v2"
    assert deploy(control_plane, ns, "m-canary") is None


def test_no_evidence_pauses_the_rollout_and_says_why(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """kwok's pods serve nothing, so no interval is ever conclusive: after inconclusiveLimit the
    rollout pauses (the operator keeps reconciling on its own timer; no event is needed)."""
    ns = namespace
    rollout = {**ROLLOUT, "analysis": {"interval": "1s", "inconclusiveLimit": "3s"}}
    apply(control_plane, ns, "s3://bucket/v1", rollout)
    rollout_in(control_plane, ns, "Stable")
    apply(control_plane, ns, "s3://bucket/v2", rollout)
    obj = rollout_in(control_plane, ns, "Paused", timeout=90)
    st = obj["status"]["rollout"]
    assert st["reason"].startswith("paused: no conclusive analysis for 3s (canary answered 0 requests")
    assert (st["column"], st["weight"], st["lastAnalysis"]["decision"]) == ("paused 25%", 25, "inconclusive")
    poll(lambda: "CanaryPaused" in reasons(control_plane, ns), timeout=30, what="the CanaryPaused Event")


def test_the_hpa_scales_the_total_and_each_step_splits_it(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """The HPA targets the ModelService's scale subresource, so a canary splits whatever it decides.

    The real HPA controller has no metrics API here, so this test scales the ModelService through
    the same scale subresource the HPA writes (`kubectl scale`), and lets the HPA itself bring a
    value above maxReplicas back into its range.
    """
    ns = namespace

    def apply_auto(uri: str) -> None:  # no spec.replicas in the manifest: the HPA owns it
        doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "m"},
               "spec": {"model": {"uri": uri}, "rollout": ROLLOUT,
                        "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}
        control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))

    def split_is(stable: int, canary: int) -> bool:
        s, c = deploy(control_plane, ns, "m"), deploy(control_plane, ns, "m-canary")
        status_split = ((msvc(control_plane, ns) or {}).get("status") or {}).get("rollout", {}).get("split") or {}
        return bool(s and c and (s["spec"]["replicas"], c["spec"]["replicas"]) == (stable, canary)
                    and (status_split.get("stable"), status_split.get("canary")) == (stable, canary))

    apply_auto("s3://bucket/v1")
    rollout_in(control_plane, ns, "Stable")
    poll(lambda: (d := deploy(control_plane, ns, "m")) and d["spec"]["replicas"] == 2, timeout=90,
         what="the HPA raising spec.replicas to minReplicas 2")
    control_plane.kubectl("scale", "msvc", "m", "-n", ns, "--replicas=4")
    poll(lambda: deploy(control_plane, ns, "m")["spec"]["replicas"] == 4, timeout=30, what="4 stable replicas")
    apply_auto("s3://bucket/v2")
    rollout_in(control_plane, ns, "Progressing")
    poll(lambda: split_is(3, 1), timeout=30, what="4 replicas split 3 stable + 1 canary at 25%")
    control_plane.kubectl("scale", "msvc", "m", "-n", ns, "--replicas=8")  # above maxReplicas 6
    poll(lambda: split_is(4, 2), timeout=90, what="the HPA's 6 replicas split 4 stable + 2 canary")
    obj = msvc(control_plane, ns)
    assert obj["spec"]["replicas"] == 6
    assert obj["status"]["rollout"]["phase"] == "Progressing"  # scaling never restarts the canary


def test_a_third_revision_supersedes_the_canary_then_rolling_update_ends_it(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """v1 stable, v2 canary, v3 applied: the canary Deployment moves to v3 from the first step
    while stable keeps v1; then spec.rollout switched to RollingUpdate mid-canary promotes v3 by
    replacing every pod and scales the canary Deployment to 0."""
    ns = namespace
    start_canary(control_plane, ns)
    apply(control_plane, ns, "s3://bucket/v3")
    obj = poll(lambda: (o := msvc(control_plane, ns)) and (o["status"]["rollout"].get("canary") or {}).get("uri")
               == "s3://bucket/v3" and o, timeout=60, what="the canary moving to v3")
    st = obj["status"]
    assert (st["rollout"]["phase"], st["rollout"]["step"], st["rollout"]["stable"]["uri"]) == (
        "Progressing", 0, "s3://bucket/v1")
    assert [(h["uri"], h["outcome"]) for h in st["history"]] == [
        ("s3://bucket/v1", "Deployed"), ("s3://bucket/v2", "Superseded")]
    poll(lambda: (c := deploy(control_plane, ns, "m-canary")) and fetched(c) == "s3://bucket/v3"
         and c["spec"]["replicas"] == 1, timeout=30, what="the canary Deployment serving v3 on 1 pod")
    assert fetched(deploy(control_plane, ns, "m")) == "s3://bucket/v1"

    apply(control_plane, ns, "s3://bucket/v3", rollout={"strategy": "RollingUpdate"})
    obj = rollout_in(control_plane, ns, "Stable")
    assert [(h["uri"], h["outcome"]) for h in obj["status"]["history"]] == [
        ("s3://bucket/v1", "Deployed"), ("s3://bucket/v2", "Superseded"), ("s3://bucket/v3", "Promoted")]
    assert obj["status"]["history"][-1]["why"] == "RollingUpdate strategy: the canary's revision replaced every pod"
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 0, timeout=30, what="canary at 0")
    stable = poll(lambda: (d := deploy(control_plane, ns, "m")) and d["spec"]["replicas"] == 4 and d,
                  timeout=30, what="stable at 4 replicas")
    assert fetched(stable) == "s3://bucket/v3"
    assert obj["status"]["rollout"]["column"] == "stable"


def test_commands_that_cannot_act_are_refused_with_a_warning_and_removed(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    apply(control_plane, ns, "s3://bucket/v1")
    rollout_in(control_plane, ns, "Stable")

    def warned(reason: str) -> Any:
        events = get_json(control_plane, "events", "-n", ns, "--field-selector",
                          f"involvedObject.kind=ModelService,reason={reason}") or {}
        return (events.get("items") or [None])[0]

    def annotation_gone() -> bool:
        return "kubemaas.io/rollout" not in (msvc(control_plane, ns)["metadata"].get("annotations") or {})

    annotate(control_plane, ns, "Abort!")
    event = poll(lambda: warned("InvalidRolloutCommand"), timeout=30, what="the InvalidRolloutCommand Event")
    assert event["type"] == "Warning"
    assert event["message"] == ("annotation kubemaas.io/rollout: expected one of promote, promote-full, abort, "
                                "got 'Abort!'")
    poll(annotation_gone, timeout=30, what="the bad annotation removed")
    annotate(control_plane, ns, "abort")  # nothing to abort: a stable rollout
    event = poll(lambda: warned("RolloutCommandIgnored"), timeout=30, what="the RolloutCommandIgnored Event")
    assert event["message"] == ("annotation kubemaas.io/rollout=abort ignored: no canary is being judged "
                                "(rollout phase Stable)")
    poll(annotation_gone, timeout=30, what="the ignored annotation removed")
    assert msvc(control_plane, ns)["status"]["rollout"]["phase"] == "Stable"


def test_a_stable_deployment_deleted_mid_canary_comes_back_on_the_stable_revision(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """Deleted by hand while v2 is judged, the stable Deployment is re-created serving v1 (the
    revision status.rollout.stable records), never the canary's v2 unjudged."""
    ns = namespace
    start_canary(control_plane, ns)
    old_uid = poll(lambda: (d := deploy(control_plane, ns, "m")) and d["spec"]["replicas"] == 3 and d,
                   timeout=30, what="stable at 3 replicas")["metadata"]["uid"]
    control_plane.kubectl("delete", "deployment", "m", "-n", ns, "--wait=true")
    again = poll(lambda: (d := deploy(control_plane, ns, "m")) and d["metadata"]["uid"] != old_uid and d,
                 timeout=60, what="the stable Deployment re-created")
    assert (fetched(again), again["spec"]["replicas"]) == ("s3://bucket/v1", 3)
    st = msvc(control_plane, ns)["status"]["rollout"]
    assert (st["phase"], st["stable"]["uri"], st["canary"]["uri"]) == ("Progressing", "s3://bucket/v1", "s3://bucket/v2")


def test_a_promotion_whose_stable_pods_crash_loop_rolls_back_to_the_previous_stable(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """Promoting rolls the stable Deployment to v2 at full size; its new pods crash-loop there.

    kwok makes every scheduled pod Ready at once, so the nodes are cordoned while the promotion
    runs: the new stable pods stay unscheduled and the test gives one the status a crash-looping
    pod has (as the canary crash-loop test above does), which is what the operator reads."""
    ns = namespace
    start_canary(control_plane, ns)
    nodes = [n["metadata"]["name"] for n in (get_json(control_plane, "nodes") or {}).get("items") or []]
    for node in nodes:
        control_plane.kubectl("cordon", node)
    try:
        annotate(control_plane, ns, "promote-full")
        rollout_in(control_plane, ns, "Promoting")

        def new_stable_pod() -> Any:
            items = (get_json(control_plane, "pods", "-n", ns) or {}).get("items") or []
            return next((p["metadata"]["name"] for p in items if not p["spec"].get("nodeName")
                         and "kubemaas.io/track" not in p["metadata"].get("labels", {})), None)

        pod = poll(new_stable_pod, timeout=60, what="a stable pod of the promoted revision")
        set_pod_status(control_plane, ns, pod, {"containerStatuses": [{
            "name": "kserve-container", "image": "kubemaas/serving:test", "imageID": "", "ready": False,
            "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 137, "message": "OOMKilled at full size"}},
        }]})
        obj = rollout_in(control_plane, ns, "RolledBack")
    finally:
        for node in nodes:
            control_plane.kubectl("uncordon", node)
    st = obj["status"]
    why = st["rollout"]["reason"]
    assert why.startswith("promotion failed: the stable pods cannot run ")
    assert f"CrashLoopBackOff: pod {pod}" in why
    assert "OOMKilled at full size" in why
    assert (st["rollout"]["stable"]["uri"], st["rollout"]["column"]) == ("s3://bucket/v1", "rolled back")
    assert [(h["outcome"], h["why"]) for h in st["history"]][-1] == ("RolledBack", why)
    assert (condition(obj, "RolledBack") or {}).get("reason") == "PromotionFailed"
    poll(lambda: fetched(deploy(control_plane, ns, "m")) == "s3://bucket/v1", timeout=30, what="stable back on v1")
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 0, timeout=30, what="canary at 0")


def test_scaled_to_zero_mid_canary_pauses_and_says_why_then_resumes(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    start_canary(control_plane, ns)
    control_plane.kubectl("scale", "msvc", "m", "-n", ns, "--replicas=0")
    obj = rollout_in(control_plane, ns, "Paused")
    st = obj["status"]["rollout"]
    assert st["reason"].startswith("scaled to zero: spec.replicas is 0, so no pod serves either revision")
    assert (st["column"], st.get("stepStarted")) == ("paused 25% (0 pods)", None)
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 0, timeout=30, what="canary at 0")
    assert "CanaryPaused" in reasons(control_plane, ns)
    control_plane.kubectl("scale", "msvc", "m", "-n", ns, "--replicas=4")
    obj = rollout_in(control_plane, ns, "Progressing")
    assert obj["status"]["rollout"]["column"] == "canary 25%"
    poll(lambda: deploy(control_plane, ns, "m-canary")["spec"]["replicas"] == 1, timeout=30, what="canary back at 1")
