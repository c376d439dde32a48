"""Proof that the control plane is real: each test fails against a fake or partial one."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.harness import (
    APISERVER,
    ETCD,
    KWOK_NODE_NAME,
    ComponentError,
    ControlPlane,
    MissingBinaryError,
    PortInUseError,
    StaleDataDirError,
    default_bin_dir,
    k8s_version,
    missing_binaries,
)

pytestmark = pytest.mark.cluster

IMAGE = "kubemaas/test:1"  # never pulled: kwok plays the kubelet


def _labels(app: str) -> dict[str, str]:
    return {"app": app}


def _pod_template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": _labels(app)},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
    }


def _condition(obj: Any, kind: str) -> str | None:
    for condition in obj.status.conditions or []:
        if condition.type == kind:
            return str(condition.status)
    return None


def test_deployment_becomes_available_with_pods_running_on_the_kwok_node(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = control_plane.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": _labels("web")},
                "template": _pod_template("web"),
            },
        },
    )

    control_plane.wait_for(
        "Deployment web to have 3 available replicas",
        lambda: apps.read_namespaced_deployment_status("web", namespace).status.available_replicas == 3,
    )

    deployment = apps.read_namespaced_deployment_status("web", namespace)
    assert _condition(deployment, "Available") == "True"
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert [(p.status.phase, p.spec.node_name, _condition(p, "Ready")) for p in pods] == [
        ("Running", KWOK_NODE_NAME, "True")
    ] * 3
    assert all(p.status.pod_ip.startswith("10.244.") for p in pods)  # kwok's --cidr


def test_invalid_deployment_is_rejected_with_the_api_servers_message(
    api_server: ControlPlane, namespace: str
) -> None:
    apps = client.AppsV1Api(api_server.api_client())
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "replicas": -1,
            "selector": {"matchLabels": _labels("bad")},
            "template": _pod_template("bad"),
        },
    }

    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(namespace, body)

    assert raised.value.status == 422
    assert json.loads(raised.value.body)["message"] == (
        'Deployment.apps "bad" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0'
    )


def test_invalid_service_port_is_rejected_through_kubectl(api_server: ControlPlane, namespace: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"ports": [{"port": 70000}]},
    }

    result = api_server.kubectl("apply", "-f", "-", input=json.dumps(service), check=False)

    assert result.returncode == 1
    assert "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive" in result.stderr


def test_garbage_collector_deletes_an_owned_object_with_its_owner(
    control_plane: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(control_plane.api_client())
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )

    core.delete_namespaced_config_map("owner", namespace)

    def owned_is_gone() -> bool:
        try:
            core.read_namespaced_config_map("owned", namespace)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    control_plane.wait_for("the garbage collector to delete ConfigMap owned", owned_is_gone)


def test_kubectl_reports_the_pinned_version_and_the_kwok_node(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    nodes = control_plane.kubectl("get", "nodes", "-o", "name").stdout.split()

    assert (version["clientVersion"]["gitVersion"], version["serverVersion"]["gitVersion"]) == (
        k8s_version(),
    ) * 2
    assert nodes == [f"node/{KWOK_NODE_NAME}"]


def test_helm_installs_a_chart_into_the_cluster(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )

    assert control_plane.helm("version", "--short").stdout.startswith("v3.")
    control_plane.helm("install", "rel", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s")

    data = json.loads(
        control_plane.kubectl("get", "configmap", "rel-cm", "-n", namespace, "-o", "json").stdout
    )["data"]
    assert data == {"kube": k8s_version()}  # the server version helm read from the API server


def test_service_account_tokens_authenticate_and_rbac_decides(
    control_plane: ControlPlane, namespace: str
) -> None:
    kubectl = control_plane.kubectl
    sa = f"system:serviceaccount:{namespace}:bot"
    kubectl("create", "serviceaccount", "bot", "-n", namespace)
    token = kubectl("create", "token", "bot", "-n", namespace).stdout.strip()

    denied = kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={sa}", check=False)
    forbidden = kubectl("get", "pods", "-n", namespace, f"--token={token}", check=False)
    kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "bot-reads",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:bot",
        "-n",
        namespace,
    )
    allowed = kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={sa}", check=False)

    assert (denied.stdout.strip(), allowed.stdout.strip()) == ("no", "yes")
    assert f'User "{sa}" cannot list resource "pods"' in forbidden.stderr
    control_plane.wait_for(
        "the bot's token to list pods",
        lambda: kubectl("get", "pods", "-n", namespace, f"--token={token}", check=False).returncode == 0,
    )


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                **_pod_template(name),
                "spec": {**_pod_template(name)["spec"], "restartPolicy": "Never"},
            },
        },
    }


def test_job_pods_stay_running_until_a_test_writes_a_terminal_phase(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = control_plane.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    wait_for = control_plane.wait_for

    def running_pod(app: str) -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        return pods[0] if len(pods) == 1 and pods[0].status.phase == "Running" else None

    def settle(marker: str) -> None:
        """Once kwok has made a pod created now Running, it has handled the events before it."""
        core.create_namespaced_pod(
            namespace,
            {"metadata": {"name": marker, "labels": _labels(marker)}, "spec": _pod_template(marker)["spec"]},
        )
        wait_for(f"pod {marker} to run", lambda: running_pod(marker) is not None)

    for name in ("fails", "succeeds"):
        batch.create_namespaced_job(namespace, _job(name))
    wait_for(
        "the pods of both Jobs to run", lambda: None not in (running_pod("fails"), running_pod("succeeds"))
    )
    settle("marker-1")
    assert [running_pod(name) is not None for name in ("fails", "succeeds")] == [True, True]

    for name, phase, code in (("fails", "Failed", 1), ("succeeds", "Succeeded", 0)):
        pod = running_pod(name)
        terminated = {"exitCode": code, "reason": "Error" if code else "Completed"}
        core.patch_namespaced_pod_status(
            pod.metadata.name,
            namespace,
            {
                "status": {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": terminated},
                        }
                    ],
                }
            },
        )
    wait_for(
        "Job fails to fail",
        lambda: _condition(batch.read_namespaced_job_status("fails", namespace), "Failed") == "True",
    )
    wait_for(
        "Job succeeds to complete",
        lambda: _condition(batch.read_namespaced_job_status("succeeds", namespace), "Complete") == "True",
    )
    settle("marker-2")

    phases = {
        name: [
            p.status.phase for p in core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
        ]
        for name in ("fails", "succeeds")
    }
    assert phases == {"fails": ["Failed"], "succeeds": ["Succeeded"]}


def test_a_killed_component_is_reported_by_name_with_its_log_tail() -> None:
    with ControlPlane(full=False, crds_dir=None) as plane:
        etcd_pid = plane.pid(ETCD)
        os.kill(plane.pid(APISERVER), signal.SIGKILL)

        with pytest.raises(ComponentError) as raised:
            plane.wait_for("something that never happens", lambda: False, timeout=30)

    error = raised.value
    assert (error.component, error.problem) == (APISERVER, "exited with code -9")
    assert error.log_tail
    assert str(error).startswith("kube-apiserver: exited with code -9\n")
    assert str(error).endswith(error.log_tail)
    with pytest.raises(ProcessLookupError):
        os.kill(etcd_pid, 0)  # stop() took etcd down too


def test_missing_binaries_name_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(
        MissingBinaryError, match=r"missing etcd, kube-apiserver, .*run `make cluster-binaries`"
    ):
        ControlPlane(bin_dir=tmp_path).start()


def test_a_data_dir_from_an_earlier_run_is_refused(tmp_path: Path) -> None:
    if missing_binaries(default_bin_dir()):
        pytest.fail("run `make cluster-binaries` first")
    (tmp_path / "etcd" / "member").mkdir(parents=True)

    with pytest.raises(StaleDataDirError, match="holds etcd data from an earlier run"):
        ControlPlane(work_dir=tmp_path).start()


def test_an_api_port_in_use_is_refused() -> None:
    if missing_binaries(default_bin_dir()):
        pytest.fail("run `make cluster-binaries` first")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(PortInUseError, match=f"port 127.0.0.1:{port} is already in use"):
            ControlPlane(api_port=port).start()
