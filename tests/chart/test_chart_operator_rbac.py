"""The real operator, running with ONLY the chart's ServiceAccount permissions.

`helm install` (watchNamespace mode), mint a token for the chart's ServiceAccount
(`kubectl create token`, the TokenRequest API), and run `kubemaas operator` locally
with a kubeconfig holding that token, watching the namespace the chart granted. Then
apply the example TrainingJob and two ModelServices there (one served with autoscaling,
one compressed): the operator must create every kind of child under its own field
manager, write their status, and log no 403. So a permission the operator
really uses but the chart (contract 7) does not grant fails here, even when
`kubectl auth can-i` agrees with the contract. (The operator runs as a local process,
not in the kwok pod, because kwok does not run containers.)

It reuses tests/operator/support.py's OperatorProcess, and pauses the all-namespaces
operator the operator tests share (if it is running) so that it cannot do this operator's
work for it.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helmchart import CHART, ROOT, values_file
from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIELD_MANAGER = "kubemaas-chart-rbac"
FORBIDDEN = re.compile(r"Forbidden|is forbidden")  # kopf: "API error 403: Forbidden"; API: "... is forbidden: User ..."


def _service_account_kubeconfig(cp: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = account
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _managers(cp: ControlPlane, kind: str, namespace: str, selector: str) -> set[str]:
    items: list[dict[str, Any]] = json.loads(
        cp.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json", "--show-managed-fields").stdout
    )["items"]
    return {entry["manager"] for item in items for entry in item["metadata"].get("managedFields", [])}


@pytest.fixture
def chart_operator(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, shared_operator_paused: None
) -> Iterator[tuple[OperatorProcess, str]]:
    """The chart installed in `namespace`, watching `<namespace>-w`; the operator runs with its token."""
    release = f"kubemaas-{namespace}"
    watched = f"{namespace}-w"
    control_plane.kubectl("create", "namespace", watched)
    operator: OperatorProcess | None = None
    try:
        control_plane.helm(
            "install", release, str(CHART), "-n", namespace,
            "--values", str(values_file({"watchNamespace": watched}, tmp_path)),
            "--wait", "--timeout", "120s",
        )
        kubeconfig = _service_account_kubeconfig(control_plane, namespace, release, tmp_path / "sa.kubeconfig")
        operator = OperatorProcess(
            control_plane, tmp_path, namespaces=[watched],
            env={"KUBECONFIG": str(kubeconfig), "KUBEMAAS_FIELD_MANAGER": FIELD_MANAGER},
        )
        yield operator.start(), watched
    finally:
        if operator is not None:
            operator.stop()
        control_plane.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s", check=False)
        control_plane.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def _denied(operator: OperatorProcess) -> list[str]:
    return [line for line in operator.logs().splitlines() if FORBIDDEN.search(line)]


def _wait(operator: OperatorProcess, fn: Callable[[], bool], what: str) -> None:
    """Poll `fn` for up to 90 s; fail at once when the operator logs a 403, with its log tail on timeout."""
    deadline = time.monotonic() + 90
    while True:
        refused = _denied(operator)
        assert refused == [], "the operator was refused an API call the chart does not grant:\n" + "\n".join(
            refused[:10]
        )
        if fn():
            return
        assert time.monotonic() < deadline, (
            f"timed out after 90s waiting for {what}\n--- operator log (tail) ---\n{operator.logs()[-5000:]}"
        )
        time.sleep(0.2)


def _model_service(name: str, compression: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubemaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "pvc://kubemaas-models/digits/v1"}, "compression": {"mode": compression}, **spec},
    }


def test_operator_reconciles_with_only_the_charts_permissions(
    control_plane: ControlPlane, chart_operator: tuple[OperatorProcess, str]
) -> None:
    """The example TrainingJob (headless Service + Indexed Job), a ModelService served as is with
    autoscaling (Deployment + Service + HPA) and one with compression (a compression Job)."""
    operator, watched = chart_operator
    examples = ROOT / "examples"
    serve = _model_service("rbac-serve", "none", autoscaling={"minReplicas": 1, "maxReplicas": 3})
    compress = _model_service("rbac-compress", "auto")
    control_plane.kubectl("apply", "-n", watched, "-f", str(examples / "trainingjob.yaml"))
    control_plane.kubectl("apply", "-n", watched, "-f", "-", input=yaml.safe_dump_all([serve, compress]))
    tj = yaml.safe_load((examples / "trainingjob.yaml").read_text())["metadata"]["name"]

    def created(kind: str, selector: str) -> bool:
        return FIELD_MANAGER in _managers(control_plane, kind, watched, selector)

    for kind, selector in (
        ("jobs", f"kubemaas.io/trainingjob={tj}"),
        ("services", f"kubemaas.io/trainingjob={tj}"),
        ("deployments", "kubemaas.io/modelservice=rbac-serve"),
        ("services", "kubemaas.io/modelservice=rbac-serve"),
        ("horizontalpodautoscalers", "kubemaas.io/modelservice=rbac-serve"),
        ("jobs", "kubemaas.io/modelservice=rbac-compress"),
    ):
        _wait(operator, functools.partial(created, kind, selector), f"{kind} {selector} by {FIELD_MANAGER}")

    def status_written(resource: str, name: str, field: str) -> bool:
        out = control_plane.kubectl("get", resource, name, "-n", watched, "-o", "json").stdout
        return bool(json.loads(out).get("status", {}).get(field))

    for resource, name, field in (
        ("trainingjob", tj, "phase"),
        ("modelservice", "rbac-serve", "conditions"),
        ("modelservice", "rbac-compress", "conditions"),
    ):
        _wait(operator, functools.partial(status_written, resource, name, field), f"{resource} {name} status.{field}")
    assert operator.running
    assert _denied(operator) == []
