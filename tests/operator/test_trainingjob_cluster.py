"""TrainingJob against the real control plane: etcd, kube-apiserver, kube-controller-manager
(job controller, garbage collector, PV binder), kube-scheduler and kwok, with the operator
running as a real `kubemaas operator` process.

kwok plays the kubelet: it makes scheduled pods Running + Ready but never runs containers,
so these tests end pods themselves by writing a terminal phase (and, for rank 0, the
container's termination message) through the pods/status subresource, as envtest suites
do. Everything else (the job controller failing a Job, suspension deleting pods, garbage
collection of owned objects) is the real controller-manager.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess, bind_claims, condition, get_json, poll, set_pod_status

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef" * 4
INDEX = "batch.kubernetes.io/job-completion-index"
TIMEOUT = 60.0


def trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 2,
        "recipe": {"name": "digits", "epochs": 1},
        "output": {"uri": f"s3://kubemaas-test/{name}"},
    }
    body.update(spec)
    return {"apiVersion": "kubemaas.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": body}


def create(plane: ControlPlane, ns: str, obj: dict[str, Any]) -> None:
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def tj(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    obj = get_json(plane, "trainingjob", name, "-n", ns)
    assert obj is not None, f"TrainingJob {ns}/{name} is gone"
    return dict(obj)


def wait_phase(plane: ControlPlane, ns: str, name: str, phase: str, *, restarts: int | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = tj(plane, ns, name)
        st = obj.get("status") or {}
        if st.get("phase") == phase and (restarts is None or st.get("restarts") == restarts):
            return obj
        return None

    return poll(reached, timeout=TIMEOUT, what=f"TrainingJob {ns}/{name} phase {phase} (restarts={restarts})")


def pods(plane: ControlPlane, ns: str, name: str, restarts: int | None = None) -> list[dict[str, Any]]:
    selector = f"kubemaas.io/trainingjob={name}"
    if restarts is not None:
        selector += f",kubemaas.io/restart={restarts}"
    items = (get_json(plane, "pods", "-n", ns, "-l", selector) or {}).get("items") or []
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def running_ranks(plane: ControlPlane, ns: str, name: str, restarts: int, replicas: int) -> dict[int, str]:
    """Wait until every rank of the generation is Running; {rank: pod name}."""

    def ready() -> dict[int, str] | None:
        found = {int(p["metadata"]["annotations"][INDEX]): p["metadata"]["name"]
                 for p in pods(plane, ns, name, restarts) if p["status"].get("phase") == "Running"}
        return found if len(found) == replicas else None

    return poll(ready, timeout=TIMEOUT, what=f"{replicas} running ranks of {name}-r{restarts}")


def end_pod(plane: ControlPlane, ns: str, pod: str, *, exit_code: int, message: str = "") -> None:
    """Terminate a pod as a kubelet would report it (pods/status subresource, as envtest does)."""
    now = "2026-01-01T00:00:00Z"
    set_pod_status(plane, ns, pod, {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": "trainer", "image": "kubemaas/kubemaas:test", "imageID": "", "ready": False,
            "restartCount": 0, "started": False,
            "state": {"terminated": {
                "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                "message": message, "startedAt": now, "finishedAt": now,
            }},
        }],
    })


def artifact_message(uri: str) -> str:
    return json.dumps({"artifact": {"uri": uri, "sha256": SHA, "metrics": {"accuracy": 0.97, "loss": 0.1}}})


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = condition(obj, type_)
    assert found is not None, f"no {type_} condition in {obj.get('status')}"
    return dict(found)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture
def models_pvc(control_plane: ControlPlane, namespace: str) -> str:
    """A PVC `kubemaas-models` (the model store the example writes to) bound by the real PV controller
    to a hostPath PV."""
    bind_claims(control_plane, namespace, ["kubemaas-models"], timeout=TIMEOUT)
    return "kubemaas-models"


def test_example_gets_headless_service_and_indexed_job_with_env_contract(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess, models_pvc: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "trainingjob.yaml"))
    owner = tj(control_plane, namespace, "digits")
    job = poll(lambda: get_json(control_plane, "job", "digits-r0", "-n", namespace), timeout=TIMEOUT,
               what="Job digits-r0")
    svc = get_json(control_plane, "service", "digits-workers", "-n", namespace)
    uid = owner["metadata"]["uid"]
    for child in (job, svc):
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in child["metadata"]["ownerReferences"]] == [
            ("TrainingJob", "digits", uid, True)
        ]
    assert (svc["spec"]["clusterIP"], svc["spec"]["publishNotReadyAddresses"]) == ("None", True)
    assert svc["spec"]["selector"] == {"kubemaas.io/trainingjob": "digits"}
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed", 2, 2, 0,
    )
    assert spec["template"]["spec"]["subdomain"] == "digits-workers"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    env = env_of(spec["template"]["spec"]["containers"][0])
    rank_ref = {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX}']"}}
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_MASTER_ADDR",
                                "PET_MASTER_PORT", "PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK",
                                "KUBEMAAS_SOURCE_NAMESPACE", "KUBEMAAS_SOURCE_NAME", "KUBEMAAS_SOURCE_UID",
                                "KUBEMAAS_TERMINATION_LOG")} == {
        "MASTER_ADDR": "digits-r0-0.digits-workers", "MASTER_PORT": "23456", "WORLD_SIZE": "2", "RANK": rank_ref,
        "PET_MASTER_ADDR": "digits-r0-0.digits-workers", "PET_MASTER_PORT": "23456", "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": rank_ref, "KUBEMAAS_SOURCE_NAMESPACE": namespace,
        "KUBEMAAS_SOURCE_NAME": "digits", "KUBEMAAS_SOURCE_UID": uid,
        "KUBEMAAS_TERMINATION_LOG": "/dev/termination-log",
    }

    ranks = running_ranks(control_plane, namespace, "digits", 0, 2)
    rank0 = get_json(control_plane, "pod", ranks[0], "-n", namespace)
    # MASTER_ADDR is rank 0's <hostname>.<subdomain>, the name the headless Service gives it in DNS.
    assert f"{rank0['spec']['hostname']}.{rank0['spec']['subdomain']}" == env["MASTER_ADDR"]
    assert [get_json(control_plane, "pod", ranks[i], "-n", namespace)["metadata"]["annotations"][INDEX]
            for i in (0, 1)] == ["0", "1"]
    done = wait_phase(control_plane, namespace, "digits", "Running")
    assert cond(done, "Created")["status"] == "True"
    assert cond(done, "Running")["status"] == "True"
    assert done["status"]["replicaStatuses"] == {"active": 2, "succeeded": 0, "failed": 0}
    table = control_plane.kubectl("get", "tj", "digits", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "PHASE", "REPLICAS", "ARTIFACT", "REASON", "AGE"]
    assert table[6:9] == ["digits", "Running", "2"]


def test_all_ranks_succeeded_reports_rank0_artifact(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("ok"))
    ranks = running_ranks(control_plane, namespace, "ok", 0, 2)
    end_pod(control_plane, namespace, ranks[1], exit_code=0)
    end_pod(control_plane, namespace, ranks[0], exit_code=0, message=artifact_message("s3://kubemaas-test/ok"))
    done = wait_phase(control_plane, namespace, "ok", "Succeeded")
    st = done["status"]
    assert st["artifact"] == {"uri": "s3://kubemaas-test/ok", "sha256": SHA,
                              "metrics": {"accuracy": 0.97, "loss": 0.1}}
    assert (st["restarts"], st["replicaStatuses"]["succeeded"]) == (0, 2)
    assert st["completionTime"] >= st["startTime"]
    assert cond(done, "Succeeded")["status"] == "True"
    assert cond(done, "Running")["status"] == "False"
    row = control_plane.kubectl("get", "tj", "ok", "-n", namespace, "--no-headers").stdout.split()
    assert row[:4] == ["ok", "Succeeded", "2", "s3://kubemaas-test/ok"]


def test_failed_rank_restarts_the_gang_then_fails_after_backoff_limit(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("gang", runPolicy={"backoffLimit": 1}))
    first = running_ranks(control_plane, namespace, "gang", 0, 2)
    end_pod(control_plane, namespace, first[1], exit_code=1, message="rank 1 lost its peer")

    restarted = wait_phase(control_plane, namespace, "gang", "Running", restarts=1)
    assert restarted["status"]["jobName"] == "gang-r1"
    assert cond(restarted, "Restarting")["status"] == "False"
    second = running_ranks(control_plane, namespace, "gang", 1, 2)
    job = get_json(control_plane, "job", "gang-r1", "-n", namespace)
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert env["MASTER_ADDR"] == "gang-r1-0.gang-workers"
    # cleanPodPolicy None (the default): the failed rank of generation 0 stays for `kubectl logs`,
    # the surviving rank of generation 0 is stopped (a gang never runs beside its successor).
    old = poll(lambda: [p for p in pods(control_plane, namespace, "gang", 0)] if all(
        p["status"]["phase"] == "Failed" for p in pods(control_plane, namespace, "gang", 0)) else None,
        timeout=TIMEOUT, what="generation 0 reduced to its failed pod")
    assert [p["metadata"]["name"] for p in old] == [first[1]]

    end_pod(control_plane, namespace, second[0], exit_code=2, message="rank 0 diverged")
    failed = wait_phase(control_plane, namespace, "gang", "Failed", restarts=1)
    assert cond(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert failed["status"]["message"].startswith(f"rank 0 (pod {second[0]}) failed: Error (exit code 2)")
    assert "runPolicy.backoffLimit 1 reached after 1 restarts" in failed["status"]["message"]
    assert get_json(control_plane, "job", "gang-r2", "-n", namespace) is None


def test_suspend_deletes_pods_and_resume_recreates_them(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("pause"))
    before = running_ranks(control_plane, namespace, "pause", 0, 2)
    control_plane.kubectl("patch", "tj", "pause", "-n", namespace, "--type=merge",
                          "-p", json.dumps({"spec": {"runPolicy": {"suspend": True}}}))
    suspended = wait_phase(control_plane, namespace, "pause", "Suspended")
    poll(lambda: not pods(control_plane, namespace, "pause"), timeout=TIMEOUT, what="no pods while suspended")
    assert get_json(control_plane, "job", "pause-r0", "-n", namespace)["spec"]["suspend"] is True
    assert cond(suspended, "Suspended")["status"] == "True"
    assert suspended["status"]["observedGeneration"] == suspended["metadata"]["generation"] == 2

    control_plane.kubectl("patch", "tj", "pause", "-n", namespace, "--type=merge",
                          "-p", json.dumps({"spec": {"runPolicy": {"suspend": False}}}))
    after = running_ranks(control_plane, namespace, "pause", 0, 2)
    assert set(after.values()).isdisjoint(before.values())
    resumed = wait_phase(control_plane, namespace, "pause", "Running", restarts=0)
    assert cond(resumed, "Suspended")["status"] == "False"


def test_ttl_deletes_the_children_of_a_finished_job_and_keeps_its_status(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("ttl", replicas=1, runPolicy={"ttlSecondsAfterFinished": 2}))
    rank0 = running_ranks(control_plane, namespace, "ttl", 0, 1)[0]
    end_pod(control_plane, namespace, rank0, exit_code=0, message=artifact_message("s3://kubemaas-test/ttl"))
    wait_phase(control_plane, namespace, "ttl", "Succeeded")
    poll(lambda: get_json(control_plane, "job", "ttl-r0", "-n", namespace) is None
         and get_json(control_plane, "service", "ttl-workers", "-n", namespace) is None,
         timeout=TIMEOUT, what="Job ttl-r0 and Service ttl-workers deleted after the TTL")
    poll(lambda: not pods(control_plane, namespace, "ttl"), timeout=TIMEOUT, what="pods of ttl garbage-collected")
    kept = tj(control_plane, namespace, "ttl")
    assert kept["status"]["phase"] == "Succeeded"
    assert kept["status"]["artifact"]["uri"] == "s3://kubemaas-test/ttl"


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("both", {"command": ["python"], "image": "me/x:1"}, "exactly one of spec.recipe or spec.command"),
    ("neither", {"recipe": None}, "exactly one of spec.recipe or spec.command"),
    ("nccl-cpu", {"backend": "nccl"}, "spec.backend: Invalid value: \"object\": spec.backend nccl needs spec.resources.limits['nvidia.com/gpu']"),
    ("zero", {"replicas": 0}, "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"),
    ("mpi", {"backend": "mpi"}, 'spec.backend: Unsupported value: "mpi"'),
    ("recipe", {"recipe": {"name": "imagenet"}}, 'spec.recipe.name: Unsupported value: "imagenet"'),
    ("params", {"recipe": {"name": "textgen", "params": {"seqLen": 32}}}, "spec.recipe.params keys are the recipe's snake_case"),
    ("clean", {"runPolicy": {"cleanPodPolicy": "Sometimes"}}, 'spec.runPolicy.cleanPodPolicy: Unsupported value: "Sometimes"'),
    ("backoff", {"runPolicy": {"backoffLimit": -1}}, "spec.runPolicy.backoffLimit"),
    ("args", {"args": ["--x"]}, "spec.args: Invalid value"),
    ("image", {"recipe": None, "command": ["python", "train.py"]}, "spec.command: Invalid value"),
    ("env", {"podTemplate": {"env": [{"name": "RANK", "value": "3"}]}}, "spec.podTemplate.env must not set"),
    ("uri", {"output": {"uri": "ftp://x/y"}}, "spec.output.uri"),
]


@pytest.mark.parametrize(("name", "change", "error"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_by_the_api_server_naming_the_field(
    api_server: ControlPlane, namespace: str, name: str, change: dict[str, Any], error: str
) -> None:
    obj = trainingjob(f"bad-{name}", **change)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    proc = api_server.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0, f"accepted: {obj}"
    assert error in proc.stderr


def test_invalid_name_and_valid_gpu_spec(api_server: ControlPlane, namespace: str) -> None:
    long = trainingjob("x" * 46)
    proc = api_server.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(long), check=False)
    assert "metadata.name must be at most 45 characters" in proc.stderr
    gpu = trainingjob("gpu", backend="nccl", resources={"limits": {"nvidia.com/gpu": 1}})
    ok = api_server.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(gpu),
                            check=False)
    assert ok.returncode == 0, ok.stderr
    defaulted = yaml.safe_load(api_server.kubectl(
        "create", "--dry-run=server", "-o", "yaml", "-n", namespace, "-f", "-",
        input=json.dumps(trainingjob("defaults")),
    ).stdout)["spec"]
    assert (defaulted["procsPerNode"], defaulted["backend"], defaulted["masterPort"]) == (1, "gloo", 23456)
    assert defaulted["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "None", "suspend": False}


def test_clean_pod_policy_all_deletes_the_failed_generation(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("clean", runPolicy={"cleanPodPolicy": "All"}))
    first = running_ranks(control_plane, namespace, "clean", 0, 2)
    end_pod(control_plane, namespace, first[0], exit_code=1)
    wait_phase(control_plane, namespace, "clean", "Running", restarts=1)
    poll(lambda: get_json(control_plane, "job", "clean-r0", "-n", namespace) is None
         and not pods(control_plane, namespace, "clean", 0),
         timeout=TIMEOUT, what="generation 0's Job and pods deleted (cleanPodPolicy All)")


def test_active_deadline_fails_the_run_without_restarting(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob(
        "late", replicas=1, runPolicy={"activeDeadlineSeconds": 2, "backoffLimit": 3}))
    job = poll(lambda: get_json(control_plane, "job", "late-r0", "-n", namespace), timeout=TIMEOUT, what="Job late-r0")
    assert job["spec"]["activeDeadlineSeconds"] == 2
    failed = wait_phase(control_plane, namespace, "late", "Failed", restarts=0)
    assert cond(failed, "Failed")["reason"] == "DeadlineExceeded"
    assert failed["status"]["message"].startswith("runPolicy.activeDeadlineSeconds exceeded")
    assert get_json(control_plane, "job", "late-r1", "-n", namespace) is None


def test_operator_restart_catches_a_failure_it_missed(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("missed"))
    first = running_ranks(control_plane, namespace, "missed", 0, 2)
    wait_phase(control_plane, namespace, "missed", "Running")
    operator_process.kill()
    end_pod(control_plane, namespace, first[1], exit_code=1)
    operator_process.start()
    restarted = wait_phase(control_plane, namespace, "missed", "Running", restarts=1)
    assert restarted["status"]["jobName"] == "missed-r1"
    assert get_json(control_plane, "job", "missed-r2", "-n", namespace) is None


def test_created_suspended_holds_no_pods_until_resumed(
    control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess
) -> None:
    create(control_plane, namespace, trainingjob("queued", replicas=1, runPolicy={"suspend": True}))
    suspended = wait_phase(control_plane, namespace, "queued", "Suspended")
    assert suspended["status"]["message"] == "suspended; holds no pods"
    assert get_json(control_plane, "job", "queued-r0", "-n", namespace)["spec"]["suspend"] is True
    assert not pods(control_plane, namespace, "queued")
    control_plane.kubectl("patch", "tj", "queued", "-n", namespace, "--type=merge",
                          "-p", json.dumps({"spec": {"runPolicy": {"suspend": False}}}))
    running_ranks(control_plane, namespace, "queued", 0, 1)
    wait_phase(control_plane, namespace, "queued", "Running", restarts=0)
