"""The Helm chart against the real control plane (tests/cluster/harness.py).

- Every rendered object is validated by the real API server (`kubectl apply
  --dry-run=server`), which runs the same schema validation and admission as a real
  install. The ServiceMonitor is the exception: its CRD belongs to the Prometheus
  Operator, which the harness does not install; test_chart_static.py checks its fields.
- `helm install` for real, and the operator Deployment becomes Available on the kwok
  Node. kwok does not run containers: it marks the pod Running and Ready on its own,
  so the liveness/readiness probes are not executed here (the kind end-to-end script,
  tests/e2e/kind.sh, runs the real image and its probes).
- RBAC is checked with `kubectl auth can-i --as=system:serviceaccount:<ns>:<sa>`
  against the API server's RBAC authorizer for every permission in contract 7 (a
  missing verb fails) and for a sample of permissions it leaves out (which must be denied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import contract
from tests.chart.contract import Permission
from tests.chart.helmchart import CHART, render, values_file
from tests.cluster.harness import ControlPlane

pytestmark = pytest.mark.cluster

Check = tuple[Permission, str | None]  # a permission, and the namespace to ask in (None: cluster-wide)


def _can_i(cp: ControlPlane, account: str, permission: Permission, namespace: str | None) -> str:
    resource, _, sub = permission.resource.partition("/")
    target = f"{resource}.{permission.group}" if permission.group else resource
    args = ["auth", "can-i", permission.verb, target, f"--as={account}"]
    if sub:
        args.append(f"--subresource={sub}")
    args += ["-n", namespace] if namespace else []
    return cp.kubectl(*args, check=False).stdout.strip()


GATEWAY_API_CRDS = Path(__file__).resolve().parents[1] / "operator" / "fixtures"
"""The HTTPRoute CRD (a Gateway API subset): ``kubectl auth can-i`` answers no for a resource type
the server does not serve, so the contract's httproutes rules are asked with it installed."""


def _answers(cp: ControlPlane, account: str, checks: Iterable[Check]) -> dict[Check, str]:
    checks = list(checks)
    cp.apply_crds(GATEWAY_API_CRDS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda c: _can_i(cp, account, *c), checks))
    return dict(zip(checks, answers, strict=True))


def _cluster_scoped(permission: Permission) -> bool:
    return permission in contract.CLUSTER


@pytest.fixture
def release(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    """A unique release name (its ClusterRole is cluster-scoped), uninstalled afterwards."""
    name = f"kubemaas-{namespace}"
    yield name
    control_plane.helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "60s", check=False)


def _install(cp: ControlPlane, release: str, namespace: str, values: dict[str, Any], tmp: Path) -> str:
    done = cp.helm(
        "install", release, str(CHART), "-n", namespace,
        "--values", str(values_file(values, tmp)),
        "--wait", "--timeout", "120s",
    )
    return done.stdout


def _deployment(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout
    loaded: dict[str, Any] = json.loads(out)
    return loaded


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespace": "__ns__"}, {"image": {"repository": "example.org/op", "tag": "dev"}}],
    ids=["default", "namespaced", "custom-image"],
)
def test_rendered_objects_pass_server_side_validation(
    control_plane: ControlPlane, namespace: str, values: dict[str, Any]
) -> None:
    values = json.loads(json.dumps(values).replace("__ns__", namespace))
    docs = [d for d in render(values, release=f"dry-{namespace}", namespace=namespace)]
    assert docs
    out = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "name",
        input=yaml.safe_dump_all(docs),
    ).stdout.split()
    assert len(out) == len(docs), out


def test_install_makes_the_operator_available_on_the_kwok_node(
    control_plane: ControlPlane, namespace: str, release: str, tmp_path: Path
) -> None:
    notes = _install(control_plane, release, namespace, {}, tmp_path)
    assert "kubectl apply -f examples/modelservice.yaml" in notes
    assert "kubectl get msvc" in notes
    assert 'PersistentVolumeClaim "kubemaas-models"' in notes
    deployment = _deployment(control_plane, namespace, release)
    conditions = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert conditions["Available"] == "True"
    assert deployment["status"]["readyReplicas"] == 1
    pods = json.loads(
        control_plane.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}",
                              "-o", "json").stdout
    )["items"]
    assert [p["spec"]["nodeName"] for p in pods] == ["kwok-node-0"]
    assert pods[0]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_cluster_mode_service_account_has_exactly_contract_7(
    control_plane: ControlPlane, namespace: str, release: str, tmp_path: Path
) -> None:
    _install(control_plane, release, namespace, {}, tmp_path)
    account = f"system:serviceaccount:{namespace}:{release}"
    # Namespaced permissions are asked in a namespace other than the release's: cluster-wide.
    elsewhere = "default"
    allowed: list[Check] = [(p, None if _cluster_scoped(p) else elsewhere) for p in sorted(contract.ALL)]
    denied: list[Check] = [(p, elsewhere) for p in contract.DENIED]
    answers = _answers(control_plane, account, allowed + denied)
    assert [c for c in allowed if answers[c] != "yes"] == []
    assert [c for c in denied if answers[c] != "no"] == []


def test_namespaced_mode_grants_only_the_watched_namespace(
    control_plane: ControlPlane, namespace: str, release: str, tmp_path: Path
) -> None:
    # The operator lives in `namespace` and watches a second namespace.
    watched = f"{namespace}-w"
    control_plane.kubectl("create", "namespace", watched)
    try:
        _install(control_plane, release, namespace, {"watchNamespace": watched}, tmp_path)
        account = f"system:serviceaccount:{namespace}:{release}"
        allowed: list[Check] = [(p, watched) for p in sorted(contract.NAMESPACED)]
        allowed += [(p, None) for p in sorted(contract.CLUSTER)]
        outside: list[Check] = [(p, "default") for p in sorted(contract.NAMESPACED)]
        denied: list[Check] = [(p, watched) for p in contract.DENIED]
        answers = _answers(control_plane, account, allowed + outside + denied)
        assert [c for c in allowed if answers[c] != "yes"] == []
        assert [c for c in outside + denied if answers[c] != "no"] == []
        env = {
            e["name"]: e.get("value")
            for e in _deployment(control_plane, namespace, release)["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["KUBEMAAS_NAMESPACES"] == watched
    finally:
        control_plane.kubectl("delete", "namespace", watched, "--wait=false", check=False)
