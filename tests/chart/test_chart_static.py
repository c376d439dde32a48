"""The Helm chart without a cluster: lint, render, and check what was rendered.

helm is the real pinned binary (tests/cluster/build.sh); the rendered documents are
checked here for structure, security settings and RBAC, and validated by the real API
server in test_chart_cluster.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubemaas_operator import cli as operator_cli
from kubemaas_operator.controllers.modelservice.children import service as serving_service
from kubemaas_operator.settings import OperatorSettings
from kubemaas_runtime.cli import COMMANDS
from tests.chart import contract
from tests.chart.helmchart import (
    CHART,
    ROOT,
    Doc,
    env_of,
    of_kind,
    only,
    operator_container,
    permissions,
    render,
    run_helm,
    values_file,
)

NAMESPACED_VALUES: dict[str, Any] = {"watchNamespace": "models"}
MONITOR_VALUES: dict[str, Any] = {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
IMAGE_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/acme/kubemaas-operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "servingImage": {"repository": "registry.example/acme/kubemaas-serving", "digest": "sha256:" + "ab" * 32},
    "trainingImage": {"repository": "registry.example/acme/kubemaas-training", "tag": "2.0.0"},
    "workloadImagePullPolicy": "Never",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": NAMESPACED_VALUES,
    "servicemonitor": MONITOR_VALUES,
    "custom-image": IMAGE_VALUES,
}


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def _leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every value: nested maps are walked, empty maps and lists are leaves."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in {"resources", "podSecurityContext", "securityContext"}:
            out |= _leaves(value, path + ".")
        else:
            out.add(path)
    return out


# -- CRDs --------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_copies_of_crds() -> None:
    source = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    copies = {p.name: p.read_bytes() for p in sorted((CHART / "crds").iterdir())}
    assert source, "crds/ has no CRD YAML"
    assert sorted(copies) == sorted(source), "run `bash charts/sync-crds.sh`"
    drifted = [name for name in source if copies[name] != source[name]]
    assert drifted == [], f"charts/kubemaas/crds differs from crds/ in {drifted}: run `bash charts/sync-crds.sh`"


def test_sync_script_copies_new_and_removes_stale_crds(tmp_path: Path) -> None:
    (tmp_path / "charts" / "kubemaas" / "crds").mkdir(parents=True)
    (tmp_path / "crds").mkdir()
    shutil.copy(ROOT / "charts" / "sync-crds.sh", tmp_path / "charts" / "sync-crds.sh")
    (tmp_path / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n# a\n")
    (tmp_path / "charts" / "kubemaas" / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n# old\n")
    (tmp_path / "charts" / "kubemaas" / "crds" / "gone.yaml").write_text("stale\n")
    subprocess.run(["bash", str(tmp_path / "charts" / "sync-crds.sh")], check=True, capture_output=True, timeout=30)
    copied = sorted(p.name for p in (tmp_path / "charts" / "kubemaas" / "crds").iterdir())
    assert copied == ["a.yaml"]
    assert (tmp_path / "charts/kubemaas/crds/a.yaml").read_bytes() == (tmp_path / "crds/a.yaml").read_bytes()


# -- values ------------------------------------------------------------------------------------


def test_every_value_is_documented_and_every_param_exists() -> None:
    text = (CHART / "values.yaml").read_text()
    params = set(re.findall(r"^## @param (\S+) \S", text, re.MULTILINE))
    leaves = _leaves(_values())
    assert sorted(leaves - params) == [], "values without a `## @param` line"
    assert sorted(params - leaves) == [], "`## @param` lines naming no value"


def test_schema_accepts_the_defaults_and_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(_values(), schema)
    for path in _leaves(_values()):
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"values.schema.json has no property for {path}"
            node = node["properties"][part]
        assert node.get("description"), f"values.schema.json: {path} has no description"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"watchNamespace": "Not_A_Namespace"}, "watchNamespace"),
        ({"config": {"runtimePort": 70000}}, "runtimePort"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"replicaCount": 3}, "replicaCount"),
    ],
)
def test_helm_rejects_bad_values_naming_the_field(values: dict[str, Any], field: str, tmp_path: Path) -> None:
    done = run_helm("template", "kubemaas", str(CHART), "--values", str(values_file(values, tmp_path)), check=False)
    assert done.returncode != 0
    assert field in done.stderr, done.stderr


# -- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(variant: str, tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART)]
    if VARIANTS[variant]:
        args += ["--values", str(values_file(VARIANTS[variant], tmp_path))]
    done = run_helm(*args)
    assert "0 chart(s) failed" in done.stdout, done.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_carries_the_chart_labels(variant: str) -> None:
    docs = render(VARIANTS[variant])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kubemaas"
        assert labels["app.kubernetes.io/instance"] == "kubemaas"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "kubemaas-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_default_render_kinds() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]


def test_names_and_labels_are_truncated_to_63() -> None:
    release = "r" * 53  # helm's longest release name
    docs = render({"nameOverride": "n" * 40}, release=release)
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63, name
        assert not name.endswith("-"), name
        for value in doc["metadata"]["labels"].values():
            assert len(value) <= 63, value
    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["name"] == f"{release}-{'n' * 40}"[:63].rstrip("-")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_operator_deployment_is_locked_down() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"] == "kubemaas"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert container["args"] == ["operator", "--liveness=http://0.0.0.0:8080/healthz"]
    assert container["image"] == "kubemaas/operator:0.1.0"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_probes_hit_kopfs_liveness_endpoint() -> None:
    """The probes, the container port and `kubemaas operator --liveness` (parsed by the real CLI) agree."""
    container = operator_container(render({"probes": {"port": 9091}, "extraArgs": ["--verbose"]}))
    assert container["ports"] == [{"name": "healthz", "containerPort": 9091, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    command, *rest = container["args"]
    assert command == "operator"
    assert command in COMMANDS
    parser = argparse.ArgumentParser()
    operator_cli.configure(parser)
    args = parser.parse_args(rest)
    assert args.liveness == "http://0.0.0.0:9091/healthz"
    assert args.verbose is True


def test_operator_env_names_are_the_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KUBEMAAS_* the chart sets is an OperatorSettings field, every field is set (liveness
    by `--liveness`), and the chart's defaults parse to the operator's own defaults."""
    env = env_of(operator_container(render()))
    ours = {name for name in env if name.startswith("KUBEMAAS_")}
    fields = {f"KUBEMAAS_{name.upper()}" for name in OperatorSettings.model_fields} - {"KUBEMAAS_LIVENESS"}
    assert sorted(ours - fields) == [], "env vars the operator does not read"
    assert sorted(fields - ours) == [], "operator settings the chart cannot set"
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    defaults = OperatorSettings()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    configured = OperatorSettings()
    differ = {
        name
        for name in OperatorSettings.model_fields
        if getattr(configured, name) != getattr(defaults, name)
    }
    assert differ == set()
    assert (configured.serving_image, configured.training_image, configured.operator_image) == (
        "kubemaas/serving:0.1.0", "kubemaas/training:0.1.0", "kubemaas/operator:0.1.0")
    assert configured.namespaces == []


def test_custom_images_and_digest() -> None:
    container = operator_container(render(IMAGE_VALUES))
    assert container["image"] == "registry.example/acme/kubemaas-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    env = env_of(container)
    assert env["KUBEMAAS_SERVING_IMAGE"] == "registry.example/acme/kubemaas-serving@sha256:" + "ab" * 32
    assert env["KUBEMAAS_TRAINING_IMAGE"] == "registry.example/acme/kubemaas-training:2.0.0"
    assert env["KUBEMAAS_OPERATOR_IMAGE"] == "registry.example/acme/kubemaas-operator:1.2.3"
    assert env["KUBEMAAS_IMAGE_PULL_POLICY"] == "Never"


# -- RBAC --------------------------------------------------------------------------------------


def _subjects(binding: Doc) -> list[dict[str, str]]:
    subjects: list[dict[str, str]] = binding["subjects"]
    return subjects


def test_cluster_mode_grants_exactly_contract_7() -> None:
    docs = render(namespace="ops")
    role = only(docs, "ClusterRole")
    assert permissions(role["rules"]) == contract.ALL
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubemaas"}
    assert _subjects(binding) == [{"kind": "ServiceAccount", "name": "kubemaas", "namespace": "ops"}]
    assert of_kind(docs, "Role") == of_kind(docs, "RoleBinding") == []
    assert env_of(operator_container(docs))["KUBEMAAS_NAMESPACES"] == ""


def test_namespaced_mode_uses_a_role_in_the_watched_namespace() -> None:
    docs = render(NAMESPACED_VALUES, namespace="ops")
    role = only(docs, "Role")
    assert role["metadata"]["namespace"] == "models"
    assert permissions(role["rules"]) == contract.NAMESPACED
    binding = only(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "models"
    assert binding["roleRef"]["kind"] == "Role"
    assert _subjects(binding) == [{"kind": "ServiceAccount", "name": "kubemaas", "namespace": "ops"}]
    cluster_role = only(docs, "ClusterRole")
    assert permissions(cluster_role["rules"]) == contract.CLUSTER
    assert only(docs, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert env_of(operator_container(docs))["KUBEMAAS_NAMESPACES"] == "models"


def test_rbac_and_service_account_can_be_left_to_the_user() -> None:
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert sorted(d["kind"] for d in docs) == ["Deployment"]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# -- ServiceMonitor ----------------------------------------------------------------------------


def test_service_monitor_is_off_by_default() -> None:
    assert of_kind(render(), "ServiceMonitor") == []


def test_service_monitor_scrapes_the_serving_services() -> None:
    monitor = only(render(MONITOR_VALUES, namespace="ops"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "ops"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    scoped = only(render({**MONITOR_VALUES, **NAMESPACED_VALUES}), "ServiceMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["models"]}


def test_service_monitor_selects_the_services_the_operator_builds() -> None:
    """The selector and port name match what kubemaas_operator.manifests.modelservice.service() makes."""
    monitor = only(render(MONITOR_VALUES), "ServiceMonitor")
    owner = {
        "apiVersion": "kubemaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits", "namespace": "models", "uid": "0000-1111"},
        "spec": {},
    }
    built = serving_service(owner, OperatorSettings())
    assert monitor["spec"]["selector"]["matchLabels"].items() <= built["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in built["spec"]["ports"]]
