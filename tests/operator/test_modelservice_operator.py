"""The ModelService operator against the real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), with ``kubemaas operator`` as a real subprocess.

kwok simulates the kubelet: pods become Running and Ready as soon as they are scheduled, no
image is pulled and no container runs. So where a kubelet would report a state (an image that
cannot be pulled, a compression pod that finished and wrote its termination message), the test
writes that pod status through the pods/status subresource, as envtest suites do; the
Deployment, ReplicaSet, Job, garbage-collector and PV controllers are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import ControlPlane
from tests.operator.support import (
    OperatorProcess,
    bind_claims,
    condition,
    get_json,
    poll,
    set_pod_status,
    set_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modelservice-uri.yaml"
SPEC_HASH = "kubemaas.io/spec-hash"


@pytest.fixture
def claims(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    """PVCs ``models`` and ``kubemaas-models`` in the namespace, each pre-bound to a hostPath PV
    (the real PV controller binds them; the scheduler refuses pods with unbound claims)."""
    volumes = bind_claims(control_plane, namespace, ["models", "kubemaas-models"], reclaim="Retain")
    try:
        yield
    finally:
        control_plane.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def msvc(plane: ControlPlane, ns: str, name: str) -> Any:
    return get_json(plane, "modelservice", name, "-n", ns)


def apply_msvc(plane: ControlPlane, ns: str, name: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": name}, "spec": spec}
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def wait_ready(plane: ControlPlane, ns: str, name: str, timeout: float = 90) -> Any:
    def ready() -> Any:
        obj = msvc(plane, ns, name)
        cond = condition(obj, "Ready")
        st = obj["status"]
        ok = cond and cond["status"] == "True" and st.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok else None

    return poll(ready, timeout=timeout, what=f"ModelService {ns}/{name} Ready=True")


def deployment(plane: ControlPlane, ns: str, name: str) -> Any:
    return poll(lambda: get_json(plane, "deployment", name, "-n", ns), timeout=60, what=f"Deployment {ns}/{name}")


def pods(plane: ControlPlane, ns: str, selector: str) -> list[Any]:
    return list((get_json(plane, "pods", "-n", ns, "-l", selector) or {}).get("items", []))


def test_example_becomes_ready_with_the_url_in_kubectl_get(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str, claims: None
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    owner = msvc(control_plane, namespace, name)
    dep = deployment(control_plane, namespace, name)
    ref = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "name": name,
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    assert dep["metadata"]["ownerReferences"] == [ref]
    pod = dep["spec"]["template"]["spec"]
    (init,), (main,) = pod["initContainers"], pod["containers"]
    assert init["args"] == ["fetch", "pvc://kubemaas-models/digits", "/mnt/models"]
    assert main["args"] == ["serve", "--model-dir", "/mnt/models"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert (env["KUBEMAAS_MAX_BATCH_SIZE"], env["KUBEMAAS_MAX_DELAY_MS"], env["KUBEMAAS_MODEL_NAME"]) == ("32", "2", name)
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    svc = get_json(control_plane, "service", name, "-n", namespace)
    assert svc["metadata"]["ownerReferences"] == [ref]
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, "http")]
    assert get_json(control_plane, "hpa", name, "-n", namespace) is None

    obj = wait_ready(control_plane, namespace, name)
    url = f"http://{name}.{namespace}.svc.cluster.local/v2/models/{name}"
    assert obj["status"]["url"] == url
    assert (obj["status"]["readyReplicas"], obj["status"]["phase"]) == (2, "Ready")
    table = control_plane.kubectl("get", "msvc", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:7] == ["NAME", "READY", "URL", "VARIANT", "ROLLOUT", "REPLICAS", "REASON"]
    assert table[1].split()[:6] == [name, "True", url, "none", "stable", "2"]


def test_spec_change_rolls_out_and_scale_works(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    apply_msvc(control_plane, namespace, "m", {"model": {"uri": "s3://bucket/m"}})
    first = wait_ready(control_plane, namespace, "m")
    old_hash = deployment(control_plane, namespace, "m")["spec"]["template"]["metadata"]["annotations"][SPEC_HASH]
    apply_msvc(control_plane, namespace, "m", {"model": {"uri": "s3://bucket/m"}, "runtime": {"maxBatchSize": 4}})
    second = wait_ready(control_plane, namespace, "m")
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert second["status"]["observedGeneration"] == second["metadata"]["generation"]
    dep = deployment(control_plane, namespace, "m")
    assert dep["spec"]["template"]["metadata"]["annotations"][SPEC_HASH] != old_hash
    assert {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "KUBEMAAS_MAX_BATCH_SIZE"] == "4"

    control_plane.kubectl("scale", "msvc", "m", "-n", namespace, "--replicas", "3")
    poll(lambda: deployment(control_plane, namespace, "m")["spec"]["replicas"] == 3, what="Deployment replicas 3")
    poll(lambda: (msvc(control_plane, namespace, "m")["status"].get("readyReplicas") == 3), timeout=60,
         what="status.readyReplicas 3")
    scale = json.loads(control_plane.kubectl(
        "get", "--raw", f"/apis/kubemaas.io/v1alpha1/namespaces/{namespace}/modelservices/m/scale").stdout)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)
    assert scale["status"]["selector"] == "app.kubernetes.io/component=predictor,kubemaas.io/modelservice=m"


def test_autoscaling_creates_an_hpa_and_dropping_it_deletes_it(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    spec = {"model": {"uri": "s3://bucket/m"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}
    apply_msvc(control_plane, namespace, "a", spec)
    hpa = poll(lambda: get_json(control_plane, "hpa", "a", "-n", namespace), what="HPA a")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "name": "a"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    apply_msvc(control_plane, namespace, "a", {"model": {"uri": "s3://bucket/m"}, "replicas": 1})
    poll(lambda: get_json(control_plane, "hpa", "a", "-n", namespace) is None, what="HPA a deleted")
    poll(lambda: deployment(control_plane, namespace, "a")["spec"]["replicas"] == 1, what="replicas back to 1")


def test_deleting_the_modelservice_garbage_collects_its_children(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    apply_msvc(control_plane, namespace, "g", {"model": {"uri": "s3://bucket/m"}})
    wait_ready(control_plane, namespace, "g")
    control_plane.kubectl("delete", "msvc", "g", "-n", namespace, "--wait=true", "--timeout=30s")
    poll(lambda: get_json(control_plane, "deployment", "g", "-n", namespace) is None, what="Deployment gone")
    poll(lambda: get_json(control_plane, "service", "g", "-n", namespace) is None, what="Service gone")
    poll(lambda: not pods(control_plane, namespace, "kubemaas.io/modelservice=g"), what="pods gone")


def test_an_image_that_cannot_start_shows_up_in_reason(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """kwok pulls no image, so the test writes what a kubelet writes for an unpullable image:
    container waiting in ImagePullBackOff, pod not Ready. Phase stays Running because kwok's
    pod-ready stage re-readies any Pending pod."""
    apply_msvc(control_plane, namespace, "bad",
               {"model": {"uri": "s3://bucket/m"}, "runtime": {"image": "registry.invalid/nope:1"}})
    pod = poll(lambda: [p for p in pods(control_plane, namespace, "kubemaas.io/modelservice=bad")
                        if p["status"].get("podIP")], what="a scheduled pod")[0]
    set_pod_status(control_plane, namespace, pod["metadata"]["name"], {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                       {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{
            "name": "kserve-container", "image": "registry.invalid/nope:1", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                                                     "message": 'Back-off pulling image "registry.invalid/nope:1"'}},
        }],
    })

    def reason() -> Any:
        st = msvc(control_plane, namespace, "bad")["status"]
        return st if st.get("reason") == "ImagePullBackOff" else None

    st = poll(reason, timeout=60, what="REASON ImagePullBackOff")
    assert "registry.invalid/nope:1" in st["message"]
    assert condition(msvc(control_plane, namespace, "bad"), "Ready")["status"] == "False"  # type: ignore[index]
    row = control_plane.kubectl("get", "msvc", "bad", "-n", namespace, "--no-headers").stdout.split()
    assert row[1] == "False"
    assert "ImagePullBackOff" in row


def test_operator_killed_mid_rollout_converges_without_duplicates(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    apply_msvc(control_plane, namespace, "r", {"model": {"uri": "s3://bucket/m"}, "replicas": 2})
    wait_ready(control_plane, namespace, "r")
    # Start a rollout and kill the operator as soon as it has patched the Deployment.
    apply_msvc(control_plane, namespace, "r", {"model": {"uri": "s3://bucket/m2"}, "replicas": 3})
    poll(lambda: deployment(control_plane, namespace, "r")["spec"]["template"]["spec"]["initContainers"][0]["args"][1]
         == "s3://bucket/m2", what="the rollout to start")
    operator_process.kill()
    apply_msvc(control_plane, namespace, "r", {"model": {"uri": "s3://bucket/m3"}, "replicas": 2})
    operator_process.start()
    obj = wait_ready(control_plane, namespace, "r")
    dep = deployment(control_plane, namespace, "r")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == "s3://bucket/m3"
    assert obj["status"]["model"]["uri"] == "s3://bucket/m3"
    names = [d["metadata"]["name"] for d in get_json(control_plane, "deployments", "-n", namespace)["items"]]
    assert names == ["r"]
    assert len(get_json(control_plane, "services", "-n", namespace)["items"]) == 1
    # Converged means quiet: another crash and restart changes neither the Deployment nor the status.
    before = (dep["metadata"]["resourceVersion"], obj["status"])
    operator_process.restart()
    # On resume the operator re-applies every child (server-side apply); wait for that to happen.
    poll(lambda: f"applied Deployment/Service {namespace}/r " in operator_process.logs().rsplit(
        "===== operator start", 1)[-1], what="the restarted operator to resume r")
    again = wait_ready(control_plane, namespace, "r")
    after = (deployment(control_plane, namespace, "r")["metadata"]["resourceVersion"], again["status"])
    assert after == before


# -- compression -----------------------------------------------------------------------------


def report(selected: str | None, drop: float, sha: str = "c" * 64) -> dict[str, Any]:
    passed = selected is not None
    return {
        "selected": selected,
        "reason": "lowest p50 at batch 32 within the gate" if passed else f"no variant within the gate (drop {drop})",
        "bundle": {"uri": "pvc://kubemaas-models/out", "sha256": sha} if passed else None,
        "variants": [
            {"name": "fp32", "sizeBytes": 4000, "p50Batch1Ms": 0.2, "p95Batch1Ms": 0.3, "p50Batch32Ms": 2.0,
             "p95Batch32Ms": 2.5, "accuracy": 0.97, "accuracyDrop": 0.0, "agreement": 1.0, "passed": passed},
            {"name": "int8-static", "sizeBytes": 1100, "p50Batch1Ms": 0.1, "p95Batch1Ms": 0.2,
             "p50Batch32Ms": 1.0, "p95Batch32Ms": 1.2, "accuracy": 0.97 - drop, "accuracyDrop": drop,
             "agreement": 0.99, "passed": passed},
        ],
    }


def finish_job_pod(plane: ControlPlane, ns: str, job: str, message: dict[str, Any], *, ok: bool) -> None:
    """What a kubelet writes when the compression container exits: phase, terminated state, message."""
    pod = poll(lambda: pods(plane, ns, f"batch.kubernetes.io/job-name={job}"), what=f"pod of Job {job}")[0]
    set_pod_status(plane, ns, pod["metadata"]["name"], {
        "phase": "Succeeded" if ok else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{
            "name": "compress", "image": "kubemaas/kubemaas:test", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0 if ok else 1, "reason": "Completed" if ok else "Error",
                                     "message": json.dumps(message), "startedAt": "2026-01-01T00:00:00Z",
                                     "finishedAt": "2026-01-01T00:00:05Z"}},
        }],
    })


def compression_job(plane: ControlPlane, ns: str, owner: str, exclude: frozenset[str] = frozenset()) -> Any:
    def find() -> Any:
        items = get_json(plane, "jobs", "-n", ns, "-l", f"kubemaas.io/modelservice={owner}")["items"]
        fresh = [j for j in items if j["metadata"]["name"] not in exclude]
        return fresh[0] if fresh else None

    return poll(find, what=f"a compression Job of {owner}")


def set_training_status(plane: ControlPlane, ns: str, name: str, sha: str) -> None:
    set_status(plane, "trainingjob", ns, name, {
        "phase": "Succeeded",
        "artifact": {"uri": f"pvc://models/train/{sha[:8]}", "sha256": sha, "metrics": {"accuracy": 0.97}},
    })


def test_trainingjob_lineage_compression_and_rollout_on_a_new_artifact(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str, claims: None
) -> None:
    """A suspended TrainingJob whose status the test writes (as envtest suites do): the ModelService
    waits, compresses the artifact, serves the selected variant, and on a new artifact compresses
    and rolls out again; a later failed gate leaves the serving revision alone."""
    tj = yaml.safe_load((REPO / "examples" / "trainingjob.yaml").read_text())
    tj["metadata"] = {"name": "train"}
    tj["spec"]["replicas"] = 1
    tj["spec"]["runPolicy"] = {"suspend": True}
    apply_msvc(control_plane, namespace, "lin", {
        "model": {"trainingJobRef": {"name": "train"}},
        "compression": {"mode": "auto", "maxAccuracyDrop": 0.01},
    })
    waiting = poll(lambda: condition(msvc(control_plane, namespace, "lin"), "ArtifactReady"), what="ArtifactReady")
    assert (waiting["status"], waiting["reason"]) == ("False", "WaitingForTraining")
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(tj))

    sha1 = "1" * 64
    # The TrainingJob operator may still write its own first status; write ours until it holds.
    def job_after(sha: str, exclude: frozenset[str] = frozenset()) -> Any:
        def step() -> Any:
            st = (get_json(control_plane, "trainingjob", "train", "-n", namespace) or {}).get("status") or {}
            if (st.get("artifact") or {}).get("sha256") != sha or st.get("phase") != "Succeeded":
                set_training_status(control_plane, namespace, "train", sha)
            items = get_json(control_plane, "jobs", "-n", namespace, "-l", "kubemaas.io/modelservice=lin")["items"]
            fresh = [j for j in items if j["metadata"]["name"] not in exclude]
            return fresh[0] if fresh else None
        return poll(step, timeout=60, interval=0.5, what=f"compression Job for artifact {sha[:8]}")

    job = job_after(sha1)
    name = job["metadata"]["name"]
    assert name.startswith("lin-compress-")
    assert len(name) == len("lin-compress-") + 8
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["compress", "--bundle", f"pvc://models/train/{sha1[:8]}"]
    assert args[3:] == ["--output", f"pvc://kubemaas-models/{namespace}/lin/{name[-8:]}", "--mode", "auto",
                        "--max-accuracy-drop", "0.01"]
    assert job["metadata"]["ownerReferences"][0]["name"] == "lin"
    compressing = msvc(control_plane, namespace, "lin")["status"]
    assert (compressing["phase"], condition({"status": compressing}, "Compressed")["reason"]) == (  # type: ignore[index]
        "Compressing", "Compressing")
    assert get_json(control_plane, "deployment", "lin", "-n", namespace) is None  # nothing served before compression

    finish_job_pod(control_plane, namespace, name, report("int8-static", 0.004, sha="c" * 64), ok=True)
    obj = wait_ready(control_plane, namespace, "lin")
    st = obj["status"]
    assert st["model"] == {
        "uri": "pvc://kubemaas-models/out", "sha256": "c" * 64, "variant": "int8-static", "sizeBytes": 1100,
        "sourceUri": f"pvc://models/train/{sha1[:8]}", "sourceSha256": sha1,
        "source": {"kind": "TrainingJob", "namespace": namespace, "name": "train",
                   "uid": get_json(control_plane, "trainingjob", "train", "-n", namespace)["metadata"]["uid"]},
    }
    assert st["compression"]["selected"] == "int8-static"
    assert [v["name"] for v in st["compression"]["variants"]] == ["fp32", "int8-static"]
    assert condition(obj, "Compressed")["reason"] == "VariantSelected"  # type: ignore[index]
    row = control_plane.kubectl("get", "msvc", "lin", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:4] == ["True", f"http://lin.{namespace}.svc.cluster.local/v2/models/lin", "int8-static"]
    hash1 = deployment(control_plane, namespace, "lin")["spec"]["template"]["metadata"]["annotations"][SPEC_HASH]

    # A new successful run: new artifact -> new compression Job -> rolling update.
    sha2 = "2" * 64
    job2 = job_after(sha2, exclude=frozenset({name}))["metadata"]["name"]
    assert job2 != name
    assert deployment(control_plane, namespace, "lin")["spec"]["template"]["metadata"]["annotations"][SPEC_HASH] == hash1
    finish_job_pod(control_plane, namespace, job2, report("int8-static", 0.003, sha="d" * 64), ok=True)
    obj = poll(lambda: (o := wait_ready(control_plane, namespace, "lin"))["status"]["model"]["sha256"] == "d" * 64 and o,
               timeout=90, what="the new revision Ready")
    assert obj["status"]["model"]["sourceSha256"] == sha2
    hash2 = deployment(control_plane, namespace, "lin")["spec"]["template"]["metadata"]["annotations"][SPEC_HASH]
    assert hash2 != hash1
    poll(lambda: get_json(control_plane, "job", name, "-n", namespace) is None, what=f"superseded Job {name} pruned")

    # A third artifact fails the gate: READY=False naming the drop; the Deployment is untouched.
    sha3 = "3" * 64
    job3 = job_after(sha3, exclude=frozenset({name, job2}))["metadata"]["name"]
    finish_job_pod(control_plane, namespace, job3, report(None, 0.0734), ok=False)

    def gate_failed() -> Any:
        s = msvc(control_plane, namespace, "lin")["status"]
        return s if str(s.get("reason", "")).startswith("AccuracyGateFailed:") else None

    failed = poll(gate_failed, timeout=60, what="REASON AccuracyGateFailed")
    assert "int8-static drop 0.0734 (failed)" in failed["message"]
    assert failed["reason"] == "AccuracyGateFailed: best drop 0pt (fp32) > 1pt"  # the fixture's fp32 also failed
    assert failed["model"]["sha256"] == "d" * 64  # still serving the previous revision
    dep = deployment(control_plane, namespace, "lin")
    assert dep["spec"]["template"]["metadata"]["annotations"][SPEC_HASH] == hash2
    row = control_plane.kubectl("get", "msvc", "lin", "-n", namespace, "--no-headers").stdout.split()
    assert row[1] == "False"
    assert "AccuracyGateFailed:" in row
