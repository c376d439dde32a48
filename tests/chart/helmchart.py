"""Helpers for the chart tests: the pinned helm binary, rendering, and RBAC rule sets.

helm comes from the control-plane bin directory that tests/cluster/build.sh fills
(`make cluster-binaries`), resolved the same way tests/cluster/harness.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.contract import Permission
from tests.cluster.harness import default_bin_dir

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "charts" / "kubemaas"

Doc = dict[str, Any]


def helm_binary() -> Path:
    """The pinned helm; fails (as the cluster fixtures do) with the command that builds it."""
    path = default_bin_dir() / "helm"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"helm is not at {path}: run `make cluster-binaries` (bash tests/cluster/build.sh) "
            "to build the pinned control-plane binaries",
            pytrace=False,
        )
    return path


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with throw-away config/cache dirs and no cluster."""
    with tempfile.TemporaryDirectory(prefix="kubemaas-helm-") as home:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
            "KUBECONFIG": f"{home}/no-kubeconfig",
        }
        done = subprocess.run(
            [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    path = directory / "values.json"  # JSON is YAML
    path.write_text(json.dumps(values))
    return path


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "kubemaas",
    namespace: str = "kubemaas-system",
) -> list[Doc]:
    """`helm template` the chart and parse every document (CRDs not included)."""
    with tempfile.TemporaryDirectory(prefix="kubemaas-values-") as tmp:
        args = ["template", release, str(CHART), "--namespace", namespace]
        if values:
            args += ["--values", str(values_file(values, Path(tmp)))]
        out = run_helm(*args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), doc
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    return docs


def only(docs: Iterable[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def permissions(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    """RBAC rules flattened to (group, resource, verb) triples; wildcards are refused."""
    out: set[Permission] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add(Permission(group, resource, verb))
    return out


def operator_container(docs: Iterable[Doc]) -> Doc:
    deployment = only(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    container: Doc = containers[0]
    return container


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}
