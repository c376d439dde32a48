"""The real operator, running with ONLY the chart's ServiceAccount permissions.

`helm install` (watchNamespace mode), mint a token for the chart's ServiceAccount
(`kubectl create token`, the TokenRequest API), and run `kubemaas operator` locally
with a kubeconfig holding that token, watching the namespace the chart granted. Then
apply the example TrainingJob and ModelService there: the operator must create their
children under its own field manager and log no 403. So a permission the operator
really uses but the chart (contract 7) does not grant fails here, even when
`kubectl auth can-i` agrees with the contract. (The operator runs as a local process,
not in the kwok pod, because kwok does not run containers.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helmchart import CHART, ROOT, values_file
from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess, poll

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIELD_MANAGER = "kubemaas-chart-rbac"
FORBIDDEN = re.compile(r"\b403\b|Forbidden|forbidden")


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
    control_plane: ControlPlane, namespace: str, tmp_path: Path
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


def _wait(operator: OperatorProcess, fn: Callable[[], bool], what: str) -> None:
    """poll(), with the operator's log tail in the failure."""
    try:
        poll(fn, timeout=90, what=what)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n--- operator log (tail) ---\n{operator.logs()[-5000:]}") from None


def test_operator_reconciles_the_examples_with_only_the_charts_permissions(
    control_plane: ControlPlane, chart_operator: tuple[OperatorProcess, str]
) -> None:
    operator, watched = chart_operator
    examples = ROOT / "examples"
    control_plane.kubectl(
        "apply", "-n", watched, "-f", str(examples / "trainingjob.yaml"), "-f", str(examples / "modelservice.yaml")
    )
    tj = yaml.safe_load((examples / "trainingjob.yaml").read_text())["metadata"]["name"]
    msvc = yaml.safe_load((examples / "modelservice.yaml").read_text())["metadata"]["name"]

    def created(kind: str, selector: str) -> bool:
        return FIELD_MANAGER in _managers(control_plane, kind, watched, selector)

    for kind, selector in (
        ("jobs", f"kubemaas.io/trainingjob={tj}"),
        ("services", f"kubemaas.io/trainingjob={tj}"),
    ):
        _wait(operator, lambda: created(kind, selector), f"{kind} of TrainingJob {tj} by {FIELD_MANAGER}")

    def status_written() -> bool:
        out = control_plane.kubectl("get", "trainingjob", tj, "-n", watched, "-o", "json").stdout
        return bool(json.loads(out).get("status", {}).get("phase"))

    _wait(operator, status_written, f"TrainingJob {tj} status.phase")

    def msvc_status() -> bool:
        out = control_plane.kubectl("get", "modelservice", msvc, "-n", watched, "-o", "json").stdout
        return bool(json.loads(out).get("status", {}).get("conditions"))

    _wait(operator, msvc_status, f"ModelService {msvc} status.conditions")
    assert operator.running
    denied = [line for line in operator.logs().splitlines() if FORBIDDEN.search(line)]
    assert denied == [], "the operator was refused an API call the chart does not grant:\n" + "\n".join(denied[:20])
