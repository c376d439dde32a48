"""The operator tells the truth, on the real control plane (kwok tier): no silent capacity drop
when the HPA takes over, no child taken over across kinds, names the children cannot carry
refused up front, API refusals in status, the gang's shape fixed while it runs, the deadline
restarting on resume, quota refusals in REASON, one artifact rule, and Events recorded.

kwok plays the kubelet (see test_trainingjob_cluster.py): tests end pods by writing their
status through the pods/status subresource; every controller is the real one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess, bind_claims, condition, get_json, poll
from tests.operator.test_trainingjob_cluster import (
    create,
    end_pod,
    running_ranks,
    tj,
    trainingjob,
    wait_phase,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

URI = "s3://kubemaas-test/m"


def modelservice(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"uri": URI}, **spec}
    return {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": name}, "spec": body}


def msvc(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return dict(get_json(plane, "modelservice", name, "-n", ns) or {})


def msvc_reason(plane: ControlPlane, ns: str, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = msvc(plane, ns, name)
        return obj if (obj.get("status") or {}).get("reason", "").startswith(reason) else None

    return poll(reached, timeout=timeout, what=f"ModelService {ns}/{name} REASON {reason}")


def tj_reason(plane: ControlPlane, ns: str, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = tj(plane, ns, name)
        return obj if (obj.get("status") or {}).get("reason") == reason else None

    return poll(reached, timeout=timeout, what=f"TrainingJob {ns}/{name} REASON {reason}")


def ready(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        obj = msvc(plane, ns, name)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    return poll(ok, timeout=90, what=f"ModelService {ns}/{name} Ready")


def controller_of(obj: dict[str, Any]) -> str:
    ref = next(r for r in obj["metadata"]["ownerReferences"] if r.get("controller"))
    return f"{ref['kind']}/{ref['name']}"


# -- 1. the HPA takes replicas over without a capacity drop ---------------------------------------


def test_turning_autoscaling_on_and_off_never_drops_the_running_replicas(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, modelservice("cap", replicas=4))
    ready(control_plane, namespace, "cap")
    create(control_plane, namespace, modelservice("cap", replicas=4, autoscaling={"minReplicas": 3, "maxReplicas": 6}))
    poll(lambda: get_json(control_plane, "hpa", "cap", "-n", namespace), timeout=60, what="the HPA")
    seen = []
    deadline = time.monotonic() + 5  # the HPA has no CPU metrics here: it never scales on its own
    while time.monotonic() < deadline:
        seen.append(get_json(control_plane, "deployment", "cap", "-n", namespace)["spec"]["replicas"])
        time.sleep(0.2)
    assert min(seen) == 4, f"replicas seen after the hand-over: {seen}"
    create(control_plane, namespace, modelservice("cap", replicas=2))
    poll(lambda: get_json(control_plane, "hpa", "cap", "-n", namespace) is None, timeout=60, what="HPA deleted")
    poll(lambda: get_json(control_plane, "deployment", "cap", "-n", namespace)["spec"]["replicas"] == 2,
         timeout=60, what="spec.replicas 2 applied once autoscaling is off")


# -- 2. no adoption across kinds -----------------------------------------------------------------


def test_a_modelservice_never_takes_over_a_trainingjobs_service(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, trainingjob("fraud", runPolicy={"suspend": True}))
    poll(lambda: get_json(control_plane, "service", "fraud-workers", "-n", namespace), timeout=60, what="Service")
    create(control_plane, namespace, modelservice("fraud-workers"))
    obj = msvc_reason(control_plane, namespace, "fraud-workers", "Conflict")
    assert obj["status"]["phase"] == "Failed"
    assert "is controlled by TrainingJob/fraud" in obj["status"]["message"]
    svc = get_json(control_plane, "service", "fraud-workers", "-n", namespace)
    assert controller_of(svc) == "TrainingJob/fraud"
    assert svc["spec"]["clusterIP"] == "None"


def test_a_trainingjob_reports_a_conflict_when_a_modelservice_holds_its_service_name(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, modelservice("gamma-workers"))
    ready(control_plane, namespace, "gamma-workers")
    create(control_plane, namespace, trainingjob("gamma"))
    obj = tj_reason(control_plane, namespace, "gamma", "Conflict")
    assert "is controlled by ModelService/gamma-workers" in obj["status"]["message"]
    assert get_json(control_plane, "job", "gamma-r0", "-n", namespace) is None
    assert controller_of(get_json(control_plane, "service", "gamma-workers", "-n", namespace)) == (
        "ModelService/gamma-workers")


# -- 3. names and API refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "says"), [
    ("dotted.name", "must start with a letter"),
    ("1model", "must start with a letter"),
    ("m" * 64, "at most 63 characters"),
])
def test_modelservice_names_its_service_cannot_carry_are_refused(
    api_server: ControlPlane, namespace: str, name: str, says: str
) -> None:
    api_server.apply_crds()
    proc = api_server.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(modelservice(name)), check=False)
    assert proc.returncode != 0
    assert says in proc.stderr


def test_a_child_the_api_server_refuses_fails_the_modelservice_with_the_api_message(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    bad = {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}  # the schema allows it; the API does not
    create(control_plane, namespace, modelservice("refused", runtime=bad))
    obj = msvc_reason(control_plane, namespace, "refused", "ChildRefused")
    assert obj["status"]["phase"] == "Failed"
    assert "422" in obj["status"]["message"]
    assert "must be less than or equal to cpu limit" in obj["status"]["message"]


def test_a_quota_refusal_is_retried_with_back_off_and_shown_meanwhile(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-deployments"},
             "spec": {"hard": {"count/deployments.apps": "0"}}}
    create(control_plane, namespace, quota)
    create(control_plane, namespace, modelservice("quota"))
    obj = msvc_reason(control_plane, namespace, "quota", "RetryingAPIError")
    assert "403" in obj["status"]["message"]
    assert "exceeded quota" in obj["status"]["message"]
    control_plane.kubectl("delete", "resourcequota", "no-deployments", "-n", namespace)
    ready(control_plane, namespace, "quota")  # the back-off retry (1 s, 2 s, ...) gets through


def test_a_trainingjob_child_the_api_server_refuses_fails_the_run(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    bad = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    create(control_plane, namespace, trainingjob("refused", resources=bad))
    obj = wait_phase(control_plane, namespace, "refused", "Failed")
    assert obj["status"]["reason"] == "ChildRefused"
    assert "must be less than or equal to cpu limit" in obj["status"]["message"]


# -- 4. the gang's shape is fixed while it runs ------------------------------------------------------


def test_the_gang_shape_changes_only_while_suspended_and_the_resumed_gang_runs_the_edit(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, trainingjob("shape"))
    running_ranks(control_plane, namespace, "shape", 0, 2)
    proc = control_plane.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                                 input=json.dumps(trainingjob("shape", replicas=1)))
    assert proc.returncode != 0
    assert "can only change while the TrainingJob is suspended" in proc.stderr
    create(control_plane, namespace, trainingjob("shape", replicas=3, runPolicy={"suspend": True}))
    wait_phase(control_plane, namespace, "shape", "Suspended")
    create(control_plane, namespace, trainingjob("shape", replicas=3))
    running_ranks(control_plane, namespace, "shape", 0, 3)
    job = get_json(control_plane, "job", "shape-r0", "-n", namespace)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)
    obj = wait_phase(control_plane, namespace, "shape", "Running")
    assert obj["status"]["message"].startswith("3/3 ranks running")


# -- 5. the deadline restarts on resume -------------------------------------------------------------


def test_time_spent_suspended_does_not_count_against_the_deadline(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    deadline = 10
    create(control_plane, namespace, trainingjob("late", runPolicy={"suspend": True, "activeDeadlineSeconds": deadline}))
    wait_phase(control_plane, namespace, "late", "Suspended")
    assert "startTime" not in tj(control_plane, namespace, "late")["status"]
    time.sleep(deadline + 1)  # suspended longer than the whole deadline
    create(control_plane, namespace, trainingjob("late", runPolicy={"activeDeadlineSeconds": deadline}))
    ranks = running_ranks(control_plane, namespace, "late", 0, 2)
    end_pod(control_plane, namespace, ranks[1], exit_code=1, message="CUDA error")
    obj = wait_phase(control_plane, namespace, "late", "Running", restarts=1)  # restarted, not Failed
    assert "DeadlineExceeded" not in {c["reason"] for c in obj["status"]["conditions"]}


# -- 6. quota refusals reach REASON at every stage --------------------------------------------------


def test_pods_a_quota_refuses_show_as_failed_create_for_training_and_compression(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
             "spec": {"hard": {"pods": "0"}}}
    create(control_plane, namespace, quota)
    create(control_plane, namespace, trainingjob("starved"))
    training = tj_reason(control_plane, namespace, "starved", "FailedCreate")
    assert "exceeded quota" in training["status"]["message"]
    create(control_plane, namespace, modelservice("squeezed", compression={"mode": "auto"}))
    serving = msvc_reason(control_plane, namespace, "squeezed", "FailedCreate")
    assert serving["status"]["phase"] == "Compressing"
    assert "exceeded quota" in serving["status"]["message"]


# -- 7. one artifact rule for both halves -----------------------------------------------------------


def user_code(name: str, **spec: Any) -> dict[str, Any]:
    body = trainingjob(name, replicas=1, image="example/train:1", command=["python", "train.py"], **spec)
    del body["spec"]["recipe"]
    if "output" not in spec:
        del body["spec"]["output"]
    return body


def test_a_promised_artifact_without_a_checksum_fails_the_trainingjob(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, user_code("promised", output={"uri": "s3://kubemaas-test/promised"}))
    ranks = running_ranks(control_plane, namespace, "promised", 0, 1)
    end_pod(control_plane, namespace, ranks[0], exit_code=0, message=json.dumps({"artifact": {"uri": "s3://x/y"}}))
    obj = wait_phase(control_plane, namespace, "promised", "Failed")
    assert obj["status"]["reason"] == "ArtifactMissing"
    assert "has no sha256" in obj["status"]["message"]
    assert "artifact" not in obj["status"]


def test_a_modelservice_says_a_trainingjob_without_an_artifact_has_nothing_to_serve(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    bind_claims(control_plane, namespace, ["kubemaas-models"])  # the default output store of the gang
    create(control_plane, namespace, user_code("plain"))
    ranks = running_ranks(control_plane, namespace, "plain", 0, 1)
    end_pod(control_plane, namespace, ranks[0], exit_code=0)
    wait_phase(control_plane, namespace, "plain", "Succeeded")
    create(control_plane, namespace, modelservice("plain-serve", model={"trainingJobRef": {"name": "plain"}}))
    obj = msvc_reason(control_plane, namespace, "plain-serve", "NoArtifact")
    assert obj["status"]["phase"] == "Failed"
    assert "TrainingJob plain succeeded with no artifact: nothing to serve" in obj["status"]["message"]


# -- 8. Events ---------------------------------------------------------------------------------------


def test_transitions_restarts_and_rollouts_are_recorded_as_events(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    create(control_plane, namespace, trainingjob("evented"))
    ranks = running_ranks(control_plane, namespace, "evented", 0, 2)
    end_pod(control_plane, namespace, ranks[0], exit_code=137, message="OOMKilled")
    wait_phase(control_plane, namespace, "evented", "Running", restarts=1)
    create(control_plane, namespace, modelservice("evented-serve"))
    ready(control_plane, namespace, "evented-serve")

    def reasons(name: str) -> set[tuple[str, str]]:
        items = get_json(control_plane, "events", "-n", namespace,
                         "--field-selector", f"involvedObject.name={name}")["items"]
        return {(e["type"], e["reason"]) for e in items if e.get("source", {}).get("component") == "kubemaas-operator"}

    poll(lambda: {("Warning", "RankFailed")} <= reasons("evented"), timeout=30, what="TrainingJob Events")
    poll(lambda: {("Normal", "RollingOut"), ("Normal", "ModelServing")} <= reasons("evented-serve"),
         timeout=30, what="ModelService Events")
    described = control_plane.kubectl("describe", "trainingjob", "evented", "-n", namespace).stdout
    assert "RankFailed" in described
    assert "Events:  <none>" not in described
