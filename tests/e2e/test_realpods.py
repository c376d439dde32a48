"""The whole lineage in real containers on a real Node (`make e2e`).

Nothing here is simulated: the control plane of tests/cluster/harness.py plus the real
Node of tests/cluster/node.py (containerd + runc, kubelet, CNI bridge, kube-proxy,
CoreDNS), the images built from our Dockerfile by tests/cluster/images.sh, the chart
installed by the pinned helm, the operator running as a pod on the chart's RBAC.

The tests run in file order and build on each other (one cluster per module):
helm install -> TrainingJob (2 ranks in 2 pods) -> ModelService (compression Job pod,
serving Deployment with the fetch init container and the real readiness probe) -> v2
requests via `kubectl port-forward` and from a pod via the ClusterIP Service, checked
against held-out labels -> a rolling update to a new artifact under steady in-cluster
load loses no request -> turning on autoscaling under load keeps serving capacity ->
deleting the ModelService removes every child.

They run only when KUBEMAAS_E2E=1 (`make e2e` sets it): `make test` skips them. Where
this machine cannot host the Node, they skip with the list of what is missing, except
under CI=true, where that is a failure. Measured times go to the report file
($KUBEMAAS_E2E_REPORT, default /tmp/kubemaas-e2e-report.json).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import REPO_ROOT, ControlPlane
from tests.cluster.node import NODE_IP, RealNode, preflight

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(3600)]

E2E_DIR = Path(__file__).resolve().parent
NS = "kubemaas-e2e"
SYSTEM_NS = "kubemaas-system"
RELEASE = "kubemaas"
MIN_ACCURACY = 0.9
REPORT = Path(os.environ.get("KUBEMAAS_E2E_REPORT", "/tmp/kubemaas-e2e-report.json"))
TIMEOUT = float(os.environ.get("KUBEMAAS_E2E_TIMEOUT", "900"))


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"make e2e cannot run on this CI machine: {reason}", pytrace=False)
    pytest.skip(reason)


def image_tags() -> dict[str, str]:
    """target -> image reference: from $KUBEMAAS_E2E_IMAGES (what run.sh built), else as
    tests/cluster/images.sh tags the tree now."""
    listed = os.environ.get("KUBEMAAS_E2E_IMAGES")
    if listed:
        return dict(line.split("=", 1) for line in Path(listed).read_text().split())
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "tests/cluster/images.sh"), "--print-tags"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return dict(line.split("=", 1) for line in out.split())


def poll(what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT, every: float = 0.5) -> float:
    """Poll until true; return the seconds it took. Raises AssertionError naming `what`."""
    began = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - began < timeout:
        try:
            if predicate():
                return time.monotonic() - began
        except Exception as error:  # not yet
            last = error
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else "")
    )


class Cluster:
    """The running cluster plus what the tests measured (`timings`, seconds)."""

    def __init__(self, cp: ControlPlane, node: RealNode, tags: dict[str, str], store: Path) -> None:
        self.cp, self.node, self.tags, self.store = cp, node, tags, store
        self.timings: dict[str, float] = {}
        self.evidence: dict[str, Any] = {}
        self.transcript: list[str] = []  # `$ kubectl ...` and its output, for the README

    def show(self, *args: str) -> str:
        """Run kubectl and keep the command (paths relative to the repository) and its output."""
        out = self.kubectl(*args)
        command = " ".join(args).replace(f"{REPO_ROOT}/", "")
        self.transcript.append(f"$ kubectl {command}\n{out.rstrip()}\n")
        return out

    def kubectl(self, *args: str, timeout: float = 120.0, input: str | None = None) -> str:
        return self.cp.kubectl(*args, timeout=timeout, input=input).stdout

    def get(self, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", "-o", "json", *args))
        return result

    def apply(self, docs: list[dict[str, Any]] | dict[str, Any]) -> None:
        items = docs if isinstance(docs, list) else [docs]
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )

    def diagnostics(self) -> str:
        parts = []
        for args in (
            ("get", "tj,msvc,jobs,deploy,pods,svc,endpointslices", "-A", "-o", "wide"),
            ("describe", "pods", "-n", NS),
            ("logs", "-n", SYSTEM_NS, f"deployment/{RELEASE}", "--tail=80"),
        ):
            parts.append(self.cp.kubectl(*args, check=False).stdout[-6000:])
        parts.append(self.node.logs("kubelet")[-4000:])
        return "\n".join(parts)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(f"terminated by signal {signum}: tearing the real Node down")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.environ.get("KUBEMAAS_E2E") != "1":
        pytest.skip("real-pod end-to-end tests run with `make e2e` (KUBEMAAS_E2E=1)")
    problems = preflight()
    if problems:
        _skip_or_fail("this machine cannot host a real Node: " + "; ".join(problems))
    tags = image_tags()
    absent = [
        ref
        for ref in tags.values()
        if subprocess.run(["podman", "image", "exists", ref], check=False).returncode != 0
    ]
    if absent:
        pytest.fail(f"images not built: {', '.join(absent)} (bash tests/cluster/images.sh)", pytrace=False)
    store = Path(tempfile.mkdtemp(prefix="kubemaas-e2e-store-"))
    store.chmod(0o777)  # hostPath: the workload pods' non-root uid writes bundles here
    # SIGTERM (a CI timeout, `kill`) would end Python without the teardown below, leaving the
    # bridge, iptables chains and containers behind: turn it into an exception instead.
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    node = RealNode(pause_image=tags["pause"], timeout=180).start()
    cp = ControlPlane(node_ip=NODE_IP, crds_dir=None, timeout=120)
    began = time.monotonic()
    try:
        cp.start()
        node.join(cp)
        c = Cluster(cp, node, tags, store)
        c.timings["cluster_up_s"] = time.monotonic() - began
        began = time.monotonic()
        c.evidence["image_import_s"] = {k: round(v, 1) for k, v in node.import_images(tags.values()).items()}
        c.timings["image_import_s"] = time.monotonic() - began
        yield c
        REPORT.write_text(
            json.dumps(
                {
                    "timings": {k: round(v, 1) for k, v in c.timings.items()},
                    "evidence": c.evidence,
                    "transcript": c.transcript,
                },
                indent=2,
            )
        )
    finally:
        try:
            node.stop()
        finally:
            cp.stop()
            shutil.rmtree(store, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


def _repo_image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def test_helm_install_runs_the_operator_as_a_pod(cluster: Cluster) -> None:
    values: list[str] = []
    for key, target in (("image", "operator"), ("servingImage", "serving"), ("trainingImage", "training")):
        repository, tag = _repo_image(cluster.tags[target])
        values += [
            "--set",
            f"{key}.repository={repository}",
            "--set",
            f"{key}.tag={tag}",
        ]
    began = time.monotonic()
    cluster.cp.helm(
        "install",
        RELEASE,
        str(REPO_ROOT / "charts/kubemaas"),
        "--namespace",
        SYSTEM_NS,
        "--create-namespace",
        "--set",
        "workloadImagePullPolicy=IfNotPresent",
        *values,
        "--wait",
        "--timeout",
        "5m",
        timeout=330,
    )
    cluster.timings["helm_install_ready_s"] = time.monotonic() - began
    cluster.transcript.append(
        "$ helm install kubemaas charts/kubemaas -n kubemaas-system --create-namespace --wait \\\n"
        "    --set image.repository=... --set servingImage.repository=... --set trainingImage.repository=...\n"
        f"(deployed in {cluster.timings['helm_install_ready_s']:.0f} s)\n"
    )
    cluster.show("get", "deploy,pods", "-n", SYSTEM_NS, "-o", "wide")
    deployment = cluster.get("deployment", RELEASE, "-n", SYSTEM_NS)
    assert deployment["status"].get("readyReplicas") == 1, cluster.diagnostics()
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == cluster.tags["operator"]


def test_training_job_trains_in_two_pods(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", NS)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "kubemaas-models-e2e"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "hostPath": {"path": str(cluster.store)},
            "claimRef": {"namespace": NS, "name": "kubemaas-models"},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "kubemaas-models", "namespace": NS},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": "kubemaas-models-e2e",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    cluster.apply([pv, pvc])
    poll(
        "PVC kubemaas-models Bound",
        lambda: cluster.get("pvc", "kubemaas-models", "-n", NS)["status"].get("phase") == "Bound",
        timeout=60,
    )
    began = time.monotonic()
    cluster.show("apply", "-n", NS, "-f", str(REPO_ROOT / "examples/trainingjob.yaml"))

    def pods_ready() -> bool:
        pods = cluster.get("pods", "-n", NS, "-l", "kubemaas.io/trainingjob=digits")["items"]
        running = [p for p in pods if p["status"].get("phase") in ("Running", "Succeeded")]
        return len(running) == 2

    cluster.timings["training_apply_to_running_s"] = poll("2 training pods running", pods_ready)

    def phase() -> str:
        return str(cluster.get("tj", "digits", "-n", NS).get("status", {}).get("phase"))

    try:
        poll("TrainingJob digits Succeeded", lambda: phase() in ("Succeeded", "Failed"))
    finally:
        cluster.timings["training_apply_to_succeeded_s"] = time.monotonic() - began
    tj = cluster.get("tj", "digits", "-n", NS)
    assert tj["status"]["phase"] == "Succeeded", cluster.diagnostics()
    assert tj["status"]["artifact"]["uri"].startswith("pvc://kubemaas-models/digits")
    pods = cluster.get("pods", "-n", NS, "-l", "kubemaas.io/trainingjob=digits")["items"]
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    assert {p["spec"]["nodeName"] for p in pods} == {"kubemaas-node-0"}
    # rank 1 found rank 0 by its stable DNS name through the headless Service: the gang trained.
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"] == "2", env
    assert ".digits" in str(env["MASTER_ADDR"]), env
    cluster.evidence["trainingjob"] = cluster.show("get", "tj", "-n", NS)
    cluster.show("get", "jobs,pods", "-l", "kubemaas.io/trainingjob=digits", "-n", NS, "-o", "wide")
    cluster.evidence["training_metrics"] = tj["status"]["artifact"].get("metrics")


def test_compression_job_and_serving_deployment_become_ready(cluster: Cluster) -> None:
    began = time.monotonic()
    cluster.show("apply", "-n", NS, "-f", str(REPO_ROOT / "examples/modelservice.yaml"))

    def compression_done() -> bool:
        jobs = cluster.get("jobs", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
        return any(j["status"].get("succeeded") for j in jobs)

    cluster.timings["compression_apply_to_succeeded_s"] = poll(
        "the compression Job to succeed", compression_done
    )

    def ready() -> bool:
        msvc = cluster.get("msvc", "digits", "-n", NS)
        conds = {c["type"]: c["status"] for c in msvc.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True"

    try:
        poll("ModelService digits Ready", ready)
    finally:
        cluster.timings["modelservice_apply_to_ready_s"] = time.monotonic() - began
    pods = cluster.get("pods", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
    serving = [p for p in pods if p["spec"].get("initContainers")]
    assert serving, cluster.diagnostics()
    for pod in serving:
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["state"]["terminated"]["exitCode"] == 0
        container = pod["spec"]["containers"][0]
        assert container["image"] == cluster.tags["serving"]
        assert container["readinessProbe"]["httpGet"]["path"].startswith("/v2/")
    msvc = cluster.get("msvc", "digits", "-n", NS)
    cluster.evidence["modelservice"] = cluster.show("get", "tj,msvc", "-n", NS)
    cluster.show(
        "get", "deploy,svc,jobs,pods", "-l", "kubemaas.io/modelservice=digits", "-n", NS, "-o", "wide"
    )
    cluster.evidence["model"] = msvc["status"].get("model")


def _held_out() -> dict[str, Any]:
    from tests.e2e.check_endpoint import held_out_digits

    x, y = held_out_digits(0.2, 0)
    return {"inputs": x.tolist(), "labels": y.tolist()}


def _can_connect(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def test_v2_through_kubectl_port_forward(cluster: Cluster) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forward = subprocess.Popen(
        [
            str(cluster.cp.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.cp.kubeconfig),
            "port-forward",
            "-n",
            NS,
            "service/digits",
            f"{port}:80",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        poll(
            "the port-forward to listen",
            lambda: _can_connect(port),
            timeout=60,
        )
        done = subprocess.run(
            [
                sys.executable,
                str(E2E_DIR / "check_endpoint.py"),
                "--url",
                f"127.0.0.1:{port}",
                "--model",
                "digits",
                "--min-accuracy",
                str(MIN_ACCURACY),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        forward.terminate()
        forward.wait(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    cluster.transcript.append(
        f"$ kubectl port-forward -n kubemaas-e2e service/digits {port}:80 &\n"
        f"$ python tests/e2e/check_endpoint.py --url 127.0.0.1:{port} --model digits\n"
        f"{done.stdout.strip().splitlines()[-1]}\n"
    )
    assert report["accuracy"] >= MIN_ACCURACY
    cluster.evidence["port_forward"] = report


def _client_pod(cluster: Cluster, name: str, args: list[str]) -> None:
    """A pod of the serving image running incluster_client.py with the held-out digits."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "e2e-client", "namespace": NS},
            "data": {
                "incluster_client.py": (E2E_DIR / "incluster_client.py").read_text(),
                "heldout.json": json.dumps(_held_out()),
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "client",
                        "image": cluster.tags["serving"],
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "python",
                            "/client/incluster_client.py",
                            *args,
                            "--url",
                            f"http://digits.{NS}.svc.cluster.local:80",
                            "--model",
                            "digits",
                            "--data",
                            "/client/heldout.json",
                        ],
                        "volumeMounts": [
                            {"name": "client", "mountPath": "/client"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
                "volumes": [
                    {"name": "client", "configMap": {"name": "e2e-client"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        }
    )


def _last_json(cluster: Cluster, pod: str) -> dict[str, Any]:
    lines = [ln for ln in cluster.kubectl("logs", "-n", NS, pod).splitlines() if ln.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_v2_from_a_pod_through_the_cluster_ip_service(cluster: Cluster) -> None:
    _client_pod(cluster, "e2e-accuracy", ["accuracy"])
    poll(
        "pod e2e-accuracy to finish",
        lambda: cluster.get("pod", "e2e-accuracy", "-n", NS)["status"]["phase"] in ("Succeeded", "Failed"),
        timeout=300,
    )
    report = _last_json(cluster, "e2e-accuracy")
    assert report["accuracy"] >= MIN_ACCURACY, report
    assert report["idMismatch"] == 0, report
    cluster.evidence["cluster_ip"] = report


def _start_load(cluster: Cluster, name: str) -> None:
    _client_pod(cluster, name, ["load", "--stop-file", "/tmp/stop", "--max-seconds", "900"])
    poll(
        f"load pod {name} to send requests",
        lambda: '"progress": true' in cluster.kubectl("logs", "-n", NS, name),
        timeout=180,
    )


def _stop_load(cluster: Cluster, name: str) -> dict[str, Any]:
    cluster.kubectl("exec", "-n", NS, name, "--", "python", "-c", "open('/tmp/stop', 'w').close()")
    poll(
        f"load pod {name} to finish",
        lambda: cluster.get("pod", name, "-n", NS)["status"]["phase"] in ("Succeeded", "Failed"),
        timeout=60,
    )
    return _last_json(cluster, name)


def test_rolling_update_to_a_new_artifact_under_load_loses_no_request(cluster: Cluster) -> None:
    before = cluster.get("msvc", "digits", "-n", NS)["status"]["model"]
    _start_load(cluster, "e2e-load-rollout")
    generation = cluster.get("msvc", "digits", "-n", NS)["metadata"]["generation"]
    # A new artifact: serve the fp32 bundle instead of the compressed variant auto picked.
    new_mode = "none" if before.get("variant") not in (None, "", "fp32") else "int8-dynamic"
    cluster.kubectl(
        "patch",
        "-n",
        NS,
        "msvc",
        "digits",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"compression": {"mode": new_mode}}}),
    )

    def rolled() -> bool:
        msvc = cluster.get("msvc", "digits", "-n", NS)
        status = msvc.get("status", {})
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        dep = cluster.get("deployments", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
        settled = all(
            d["status"].get("updatedReplicas")
            == d["status"].get("replicas")
            == d["status"].get("readyReplicas")
            for d in dep
        )
        return (
            status.get("observedGeneration", 0) > generation
            and conds.get("Ready") == "True"
            and status.get("model", {}).get("sha256") != before.get("sha256")
            and settled
        )

    cluster.timings["rollout_to_new_artifact_s"] = poll("the rollout to the new artifact", rolled)
    report = _stop_load(cluster, "e2e-load-rollout")
    cluster.evidence["rollout_load"] = report
    assert report["ok"] > 0, report
    assert report["failed"] == 0, report


def test_turning_on_autoscaling_under_load_keeps_capacity(cluster: Cluster) -> None:
    def ready_replicas() -> int:
        deps = cluster.get("deployments", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
        return sum(int(d["status"].get("readyReplicas") or 0) for d in deps)

    before = ready_replicas()
    assert before >= 2
    _start_load(cluster, "e2e-load-hpa")
    cluster.kubectl(
        "patch",
        "-n",
        NS,
        "msvc",
        "digits",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 80}
                }
            }
        ),
    )
    lowest = before
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lowest = min(lowest, ready_replicas())
        time.sleep(0.5)
    hpa = cluster.get("hpa", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
    report = _stop_load(cluster, "e2e-load-hpa")
    cluster.evidence["autoscaling_load"] = {**report, "readyBefore": before, "readyLowest": lowest}
    assert hpa, "no HorizontalPodAutoscaler after spec.autoscaling was set"
    assert lowest >= before, (
        f"ready serving replicas dropped from {before} to {lowest} when autoscaling was turned on"
    )
    assert report["failed"] == 0, report


def test_deleting_the_modelservice_removes_every_child(cluster: Cluster) -> None:
    for pod in ("e2e-accuracy", "e2e-load-rollout", "e2e-load-hpa"):
        cluster.kubectl("delete", "pod", "-n", NS, pod, "--ignore-not-found", "--wait=false")
    cluster.show("delete", "msvc", "digits", "-n", NS, "--wait=false")
    kinds = "deployments,replicasets,services,horizontalpodautoscalers,jobs,pods"

    def gone() -> bool:
        return not cluster.get(kinds, "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]

    cluster.timings["delete_to_children_gone_s"] = poll(
        "every child of ModelService digits gone", gone, timeout=180
    )
