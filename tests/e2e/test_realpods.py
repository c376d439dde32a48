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
canary rollouts (spec.rollout Canary) under steady load: a good new variant runs in its own
canary pods beside stable's and is promoted with no failed request; a version that fails every
request (written into the model store with digits' signature, tests/e2e/canary_models.py) is
rolled back automatically at the default analysis settings, stable pods untouched, clients
seeing failures only within the canary's share of the pods and only until the rollback, and
the ModelService says why (condition RolledBack, REASON, history, an Event); a version ten
times slower is rolled back the same way without a failed request -> deleting the
ModelService removes every child.

They run only when KUBEMAAS_E2E=1 (`make e2e` sets it): `make test` skips them. Where
this machine cannot host the Node, they skip with the list of what is missing, except
under CI=true, where that is a failure. Measured times go to the report file
($KUBEMAAS_E2E_REPORT, default /tmp/kubemaas-e2e-report.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
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

from kubemaas_runtime.bundle import Bundle, Manifest, read_manifest
from tests.cluster.harness import REPO_ROOT, ControlPlane
from tests.cluster.node import NODE_IP, RealNode, preflight
from tests.e2e import canary_models

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
    # The exec's own exit status is not checked: the client may see the file and exit (ending its
    # container) before the exec'd interpreter has, which the runtime reports as 137 (SIGKILL).
    done = cluster.cp.kubectl(
        "exec", "-n", NS, name, "--", "python", "-c", "open('/tmp/stop', 'w').close()", check=False, timeout=120
    )
    try:
        poll(
            f"load pod {name} to finish",
            lambda: cluster.get("pod", name, "-n", NS)["status"]["phase"] in ("Succeeded", "Failed"),
            timeout=60,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}; the exec that wrote /tmp/stop: {done.returncode} {done.stderr}") from None
    return _last_json(cluster, name)


@contextlib.contextmanager
def _under_load(cluster: Cluster, name: str) -> Iterator[dict[str, Any]]:
    """Steady in-cluster load (pod ``name``) around the block; the dict it yields is filled with
    the load's final report (ok, failed, errors, seconds, timeline) once the block has passed.
    When the block fails the load is still stopped, and the block's failure is what is raised."""
    _start_load(cluster, name)
    report: dict[str, Any] = {}
    try:
        yield report
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_load(cluster, name)
        raise
    report.update(_stop_load(cluster, name))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """A load report without its per-second timeline, for the evidence file."""
    return {k: v for k, v in report.items() if k != "timeline"}


def _patch_digits(cluster: Cluster, spec: dict[str, Any]) -> None:
    cluster.kubectl("patch", "-n", NS, "msvc", "digits", "--type=merge", "-p", json.dumps({"spec": spec}))


def test_rolling_update_to_a_new_artifact_under_load_loses_no_request(cluster: Cluster) -> None:
    before = cluster.get("msvc", "digits", "-n", NS)["status"]["model"]
    generation = cluster.get("msvc", "digits", "-n", NS)["metadata"]["generation"]
    # A new artifact: serve the fp32 bundle instead of the compressed variant auto picked.
    new_mode = "none" if before.get("variant") not in (None, "", "fp32") else "int8-dynamic"

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

    with _under_load(cluster, "e2e-load-rollout") as report:
        _patch_digits(cluster, {"compression": {"mode": new_mode}})
        cluster.timings["rollout_to_new_artifact_s"] = poll("the rollout to the new artifact", rolled)
    cluster.evidence["rollout_load"] = _summary(report)
    assert report["ok"] > 0, report
    assert report["failed"] == 0, report


def test_turning_on_autoscaling_under_load_keeps_capacity(cluster: Cluster) -> None:
    def ready_replicas() -> int:
        deps = cluster.get("deployments", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
        return sum(int(d["status"].get("readyReplicas") or 0) for d in deps)

    before = ready_replicas()
    assert before >= 2
    with _under_load(cluster, "e2e-load-hpa") as report:
        _patch_digits(
            cluster, {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 80}}
        )
        lowest = before
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lowest = min(lowest, ready_replicas())
            time.sleep(0.5)
        hpa = cluster.get("hpa", "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]
    cluster.evidence["autoscaling_load"] = {**_summary(report), "readyBefore": before, "readyLowest": lowest}
    assert hpa, "no HorizontalPodAutoscaler after spec.autoscaling was set"
    assert lowest >= before, (
        f"ready serving replicas dropped from {before} to {lowest} when autoscaling was turned on"
    )
    assert report["failed"] == 0, report


SERVING = "kubemaas.io/modelservice=digits,app.kubernetes.io/component=predictor"
TRACK = "kubemaas.io/track"


def _epoch(stamp: str) -> float:
    """A Kubernetes timestamp (RFC 3339, whole seconds, UTC) -> Unix seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def _is_canary(pod: dict[str, Any]) -> bool:
    return (pod["metadata"].get("labels") or {}).get(TRACK) == "canary"


def _ready_since(pod: dict[str, Any]) -> float | None:
    """When the pod's Ready condition last turned True (Unix seconds), None while it is not Ready."""
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond["type"] == "Ready" and cond["status"] == "True":
            return _epoch(cond["lastTransitionTime"])
    return None


def _table(cluster: Cluster) -> dict[str, str]:
    """`kubectl get msvc digits` as column -> value (values may hold spaces: cut at the header's offsets)."""
    header, row = cluster.kubectl("get", "msvc", "digits", "-n", NS).splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


def _condition(msvc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in msvc["status"].get("conditions") or [] if c["type"] == kind)


@dataclasses.dataclass
class RolloutWatch:
    """What a canary rollout looked like from outside, sampled on every poll: the ROLLOUT column
    and status.rollout.split while it ran, when each canary pod became Ready and when it was
    deleted, and whether any stable pod was replaced or not Ready while it ran."""

    cluster: Cluster
    stable_before: dict[str, str] = dataclasses.field(default_factory=dict)
    """Stable pod name -> pod-template-hash when the watch began."""
    columns: list[str] = dataclasses.field(default_factory=list)
    splits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    canary_ready: dict[str, float] = dataclasses.field(default_factory=dict)
    canary_deleted: dict[str, float] = dataclasses.field(default_factory=dict)
    """Canary pod name -> when its deletion was asked for (Unix seconds)."""
    stable_seen: dict[str, str] = dataclasses.field(default_factory=dict)
    stable_not_ready: set[str] = dataclasses.field(default_factory=set)
    msvc: dict[str, Any] = dataclasses.field(default_factory=dict)
    trace: list[str] = dataclasses.field(default_factory=list)
    """One line per sample: Unix time, ROLLOUT column, canary pods (+ Ready, - deleting)."""

    def start(self) -> RolloutWatch:
        self.stable_before = {
            p["metadata"]["name"]: p["metadata"]["labels"]["pod-template-hash"]
            for p in self.pods()
            if not _is_canary(p) and not p["metadata"].get("deletionTimestamp")
        }
        return self

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.get("pods", "-n", NS, "-l", SERVING)["items"]
        return items

    def sample(self) -> dict[str, Any]:
        """Read the ModelService, its table row and its serving pods once; return status.rollout."""
        self.msvc = self.cluster.get("msvc", "digits", "-n", NS)
        rollout: dict[str, Any] = self.msvc.get("status", {}).get("rollout") or {}
        column = _table(self.cluster)["ROLLOUT"]
        if not self.columns or self.columns[-1] != column:
            self.columns.append(column)
        if rollout.get("split"):
            self.splits.append(rollout["split"])
        canaries = []
        for pod in self.pods():
            meta = pod["metadata"]
            name, ready = meta["name"], _ready_since(pod)
            if _is_canary(pod):
                canaries.append(name[-5:] + ("+" if ready else "") + ("-" if meta.get("deletionTimestamp") else ""))
                if ready is not None:
                    self.canary_ready.setdefault(name, ready)
                if meta.get("deletionTimestamp"):
                    # deletionTimestamp is the end of the grace period; the delete came that much earlier
                    grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                    self.canary_deleted.setdefault(name, _epoch(meta["deletionTimestamp"]) - grace)
            elif not meta.get("deletionTimestamp"):
                self.stable_seen[name] = meta["labels"]["pod-template-hash"]
                if ready is None and name in self.stable_before:  # a new pod of the split starts not Ready
                    self.stable_not_ready.add(name)
        self.trace.append(f"{time.time():.1f} {column} {' '.join(canaries)}")
        return rollout

    def assert_stable_untouched(self) -> None:
        """No stable pod was added from another template, and none of those there before the
        canary went not Ready or away (unless status.rollout.split gave stable fewer pods)."""
        hashes = set(self.stable_before.values())
        replaced = {n: h for n, h in self.stable_seen.items() if h not in hashes}
        assert not replaced, f"stable pods from another template appeared: {replaced} (was {self.stable_before})"
        assert not self.stable_not_ready, f"stable pods not Ready while the canary ran: {self.stable_not_ready}"
        fewest = min((int(s["stable"]) for s in self.splits), default=len(self.stable_before))
        if fewest >= len(self.stable_before):
            gone = set(self.stable_before) - set(self.stable_seen)
            assert not gone, f"stable pods {gone} went away, though the split kept {fewest} stable pods"


def _requests(timeline: list[list[int]], first: float, last: float) -> tuple[int, int]:
    """(ok, failed) requests that ended in the Unix seconds first..last (whole seconds, both included)."""
    ok = failed = 0
    for second, n_ok, n_failed in timeline:
        if first <= second <= last:
            ok, failed = ok + n_ok, failed + n_failed
    return ok, failed


def test_canary_of_a_good_model_is_promoted_under_load_without_a_failed_request(cluster: Cluster) -> None:
    msvc = cluster.get("msvc", "digits", "-n", NS)
    before = msvc["status"]["model"]
    # A new artifact, as in the rolling update: the other compression variant of the trained bundle.
    new_mode = "int8-dynamic" if msvc["spec"]["compression"]["mode"] == "none" else "none"
    # One short step and 5 s intervals keep make e2e short; the bad canaries below use the defaults.
    # A 50 ms latency tolerance: on the shared 2-core machine a sub-millisecond model's p95 can
    # jump by a few ms on either side, and this test is about the promotion, not the judgement.
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "hold": "5s"}],
        "analysis": {"interval": "5s", "latencyTolerance": "50ms"},
    }
    watch = RolloutWatch(cluster).start()

    def finished() -> bool:
        watch.sample()
        history = watch.msvc["status"].get("history") or []
        return bool(
            watch.msvc["status"]["rollout"]["phase"] in ("Stable", "RolledBack")
            and history
            and history[-1]["outcome"] in ("Promoted", "RolledBack", "Aborted")
            and history[-1]["variant"] != before["variant"]
        )

    began = time.monotonic()
    with _under_load(cluster, "e2e-load-canary-good") as report:
        _patch_digits(cluster, {"compression": {"mode": new_mode}, "rollout": rollout})
        try:
            poll("the good canary to be promoted", finished, timeout=300)
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus: {watch.msvc.get('status')}\nseen: {watch.trace}") from None
        cluster.timings["canary_good_to_promoted_s"] = time.monotonic() - began
        cluster.evidence["canary_good_table"] = cluster.show("get", "msvc", "digits", "-n", NS)
    status = watch.msvc["status"]
    last = status["history"][-1]
    cluster.evidence["canary_good"] = {
        **_summary(report), "columns": watch.columns, "split": watch.splits[-1] if watch.splits else None,
        "history": last, "canaryPods": sorted(watch.canary_ready),
    }
    assert (last["outcome"], status["rollout"]["phase"]) == ("Promoted", "Stable"), (last, status["rollout"])
    assert report["ok"] > 0, report
    assert report["failed"] == 0, _summary(report)
    # It ran as a canary: its own pods beside stable's, the split in status and in the ROLLOUT column.
    assert watch.canary_ready, f"no canary pod was seen Ready; ROLLOUT column went {watch.columns}"
    assert not set(watch.canary_ready) & set(watch.stable_before)
    split = watch.splits[-1]
    assert min(split["canary"], split["stable"]) >= 1, split
    assert split["effectiveWeight"] == round(100 * split["canary"] / (split["canary"] + split["stable"]), 1), split
    # "canary 50%", with "(1/2 pods)" after it where the pod split differs from the step's weight
    assert any(c.startswith("canary 50%") for c in watch.columns), watch.columns
    assert (watch.columns[-1], _table(cluster)["ROLLOUT"]) == ("stable", "stable")
    assert (last["outcome"], last["sha256"], last["variant"]) == (
        "Promoted", status["model"]["sha256"], status["model"]["variant"]), last
    assert status["rollout"]["stable"]["sha256"] == status["model"]["sha256"] != before["sha256"]
    canary_deploy = cluster.get("deployment", "digits-canary", "-n", NS)
    assert canary_deploy["spec"]["replicas"] == 0, canary_deploy["spec"]


@dataclasses.dataclass
class BadCanary:
    """One bad canary rolled out under load at the default spec.rollout, and what was seen."""

    uri: str
    watch: RolloutWatch
    report: dict[str, Any]
    ready_at: float
    """The first canary pod's Ready (its condition's lastTransitionTime, Unix seconds)."""
    rolled_back_at: float
    """The RolledBack condition's lastTransitionTime (Unix seconds); the operator scaled the canary
    to 0 just before it wrote that condition."""

    @property
    def msvc(self) -> dict[str, Any]:
        return self.watch.msvc


def _store_dir(cluster: Cluster, uri: str) -> Path:
    """Where a ``pvc://kubemaas-models/<path>`` bundle lies in the hostPath store."""
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    assert claim == "kubemaas-models", uri
    return cluster.store / path


def _bad_canary(cluster: Cluster, kind: str, build: Callable[[Path, Manifest], Bundle]) -> BadCanary:
    """Write a bad version of the served model into the store, roll it out as a canary at the
    default spec.rollout (steps and analysis) under steady load, and wait until it is rolled back,
    its pods are gone and the load has run 3 s more (to see that nothing fails afterwards).

    Raises AssertionError when no canary pod was seen Ready."""
    trained = cluster.get("tj", "digits", "-n", NS)["status"]["artifact"]["uri"]
    uri = f"pvc://kubemaas-models/canary-{kind}"
    build(_store_dir(cluster, uri), read_manifest(_store_dir(cluster, trained)))
    watch = RolloutWatch(cluster).start()

    def rolled_back() -> bool:
        rollout = watch.sample()
        return rollout.get("phase") == "RolledBack" and _table(cluster)["REASON"].startswith("RolledBack:")

    def canary_gone() -> bool:
        watch.sample()
        return not [p for p in watch.pods() if _is_canary(p)]

    with _under_load(cluster, f"e2e-load-canary-{kind}") as report:
        _patch_digits(
            cluster,
            {
                "model": {"uri": uri, "trainingJobRef": None},
                "compression": {"mode": "none"},
                "rollout": {"strategy": "Canary", "steps": None, "analysis": None},
            },
        )
        try:
            poll(f"the {kind} canary to be rolled back", rolled_back, timeout=300)
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus: {watch.msvc.get('status')}\nseen: {watch.trace}") from None
        poll(f"the {kind} canary's pods to go", canary_gone, timeout=120)
        after = time.time() + 3
        poll("3 s more of load after the rollback", lambda: time.time() > after)
    assert watch.canary_ready, f"no {kind} canary pod was seen Ready; ROLLOUT column went {watch.columns}"
    return BadCanary(
        uri, watch, report, ready_at=min(watch.canary_ready.values()),
        rolled_back_at=_epoch(_condition(watch.msvc, "RolledBack")["lastTransitionTime"]),
    )


def _assert_rolled_back_and_says_why(cluster: Cluster, bad: BadCanary, why: str) -> None:
    status = bad.msvc["status"]
    cond = _condition(bad.msvc, "RolledBack")
    last = status["history"][-1]
    table = _table(cluster)
    assert (status["rollout"]["phase"], cond["status"], cond["reason"]) == ("RolledBack", "True", "AnalysisFailed")
    assert why in cond["message"], cond
    assert (last["outcome"], last["uri"], last["why"]) == ("RolledBack", bad.uri, cond["message"]), last
    assert (table["ROLLOUT"], table["REASON"]) == ("rolled back", f"RolledBack: {cond['message']}"), table
    assert status["rollout"]["rejected"] is not None
    assert status["model"]["uri"] != bad.uri, status["model"]  # stable still serves the promoted revision
    events = cluster.get("events", "-n", NS, "--field-selector", "involvedObject.name=digits,reason=RolledBack")
    assert any(why in e["message"] for e in events["items"]), [e["message"] for e in events["items"]]
    assert any(c.startswith("canary 20%") for c in bad.watch.columns), bad.watch.columns  # the default first step
    assert cluster.get("deployment", "digits-canary", "-n", NS)["spec"]["replicas"] == 0
    bad.watch.assert_stable_untouched()


def _scale_digits(cluster: Cluster, replicas: int) -> None:
    """`kubectl scale` the ModelService (within the HPA's bounds, which it then keeps: the test
    cluster has no metrics server) and wait until that many pods are Ready."""
    cluster.kubectl("scale", "msvc", "digits", "-n", NS, f"--replicas={replicas}")

    def ready() -> bool:
        status = cluster.get("msvc", "digits", "-n", NS)["status"]
        return bool(status.get("readyReplicas") == replicas and _condition({"status": status}, "Ready")["status"] == "True")

    poll(f"{replicas} ready replicas of digits", ready, timeout=300)


def test_canary_that_fails_every_request_is_rolled_back_within_its_share(cluster: Cluster) -> None:
    # 4 replicas, so the default first step (20 %) is one canary pod beside three stable ones.
    _scale_digits(cluster, 4)
    bad = _bad_canary(cluster, "failing", canary_models.failing)
    cluster.evidence["canary_failing_table"] = cluster.show("get", "msvc", "digits", "-n", NS)
    timeline = bad.report["timeline"]
    ok, failed = _requests(timeline, bad.ready_at, bad.rolled_back_at)
    # From the second after the rollback's (its timestamp is cut to whole seconds, and kube-proxy
    # needs a moment to drop the deleted canary pods from the Service).
    after_ok, after_failed = _requests(timeline, bad.rolled_back_at + 2, float("inf"))
    last_failed = max((second for second, _, n_failed in timeline if n_failed), default=0)
    _, failed_before = _requests(timeline, 0, bad.ready_at - 1)
    weight = max(float(s["effectiveWeight"]) for s in bad.watch.splits)
    fraction = failed / (ok + failed)
    seconds = bad.report["seconds"]
    cluster.timings["canary_failing_ready_to_rollback_s"] = bad.rolled_back_at - bad.ready_at
    cluster.evidence["canary_failing"] = {
        **_summary(bad.report),
        "requestsPerSecond": round((bad.report["ok"] + bad.report["failed"]) / seconds, 1),
        "readyToRollbackS": bad.rolled_back_at - bad.ready_at,
        "canaryDeletedAfterRollbackS": {k: v - bad.rolled_back_at for k, v in bad.watch.canary_deleted.items()},
        "window": {"ok": ok, "failed": failed, "failedFraction": round(fraction, 4)},
        "failedAfterRollbackSecond": bad.report["failed"] - failed,
        "lastFailureAfterRollbackS": last_failed - bad.rolled_back_at,
        "fromTwoSecondsAfterRollback": {"ok": after_ok, "failed": after_failed},
        "readyAt": bad.ready_at,
        "rolledBackAt": bad.rolled_back_at,
        "timeline": timeline,
        "trace": bad.watch.trace,
        "effectiveWeight": weight,
        "why": _condition(bad.msvc, "RolledBack")["message"],
        "columns": bad.watch.columns,
    }
    _assert_rolled_back_and_says_why(cluster, bad, "canary rejects requests stable accepts: 4xx rate 1.00")
    # Clients saw the bad model only through the canary's share of the pods, and only until it was gone.
    assert (failed_before, failed > 0) == (0, True), cluster.evidence["canary_failing"]
    assert fraction <= weight / 100 + 0.1, cluster.evidence["canary_failing"]
    assert (after_failed, after_ok > 0) == (0, True), cluster.evidence["canary_failing"]


def test_canary_ten_times_slower_is_rolled_back_without_a_failed_request(cluster: Cluster) -> None:
    bad = _bad_canary(cluster, "slow", canary_models.slow)
    cluster.timings["canary_slow_ready_to_rollback_s"] = bad.rolled_back_at - bad.ready_at
    ok, _ = _requests(bad.report["timeline"], bad.ready_at, bad.rolled_back_at)
    cluster.evidence["canary_slow"] = {
        **_summary(bad.report),
        "readyToRollbackS": bad.rolled_back_at - bad.ready_at,
        "requestsInWindow": ok,
        "why": _condition(bad.msvc, "RolledBack")["message"],
        "columns": bad.watch.columns,
        "trace": bad.watch.trace,
    }
    _assert_rolled_back_and_says_why(cluster, bad, "canary p95 latency")
    assert bad.report["failed"] == 0, _summary(bad.report)


def test_deleting_the_modelservice_removes_every_child(cluster: Cluster) -> None:
    for pod in (
        "e2e-accuracy",
        "e2e-load-rollout",
        "e2e-load-hpa",
        "e2e-load-canary-good",
        "e2e-load-canary-failing",
        "e2e-load-canary-slow",
    ):
        cluster.kubectl("delete", "pod", "-n", NS, pod, "--ignore-not-found", "--wait=false")
    cluster.show("delete", "msvc", "digits", "-n", NS, "--wait=false")
    kinds = "deployments,replicasets,services,horizontalpodautoscalers,jobs,pods"

    def gone() -> bool:
        return not cluster.get(kinds, "-n", NS, "-l", "kubemaas.io/modelservice=digits")["items"]

    cluster.timings["delete_to_children_gone_s"] = poll(
        "every child of ModelService digits gone", gone, timeout=180
    )
