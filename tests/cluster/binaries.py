"""Where tests/cluster/build.sh puts the control plane's binaries, and which are missing.

Keep in step with build.sh: the same go.mod/go.sum files, in the same order, make the pin hash.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from tests.cluster.errors import ControlPlaneError

CLUSTER_DIR = Path(__file__).resolve().parent
GO_MODULES = ("k8s", "etcd", "kwok", "helm")

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KWOK = "kwok"
KUBECTL = "kubectl"
HELM = "helm"
CORE_COMPONENTS = (ETCD, APISERVER)
CONTROLLER_COMPONENTS = (CONTROLLER_MANAGER, SCHEDULER, KWOK)
COMPONENTS = CORE_COMPONENTS + CONTROLLER_COMPONENTS
BINARIES = (*COMPONENTS, KUBECTL, HELM)


def k8s_version() -> str:
    """The k8s.io/kubernetes version pinned in tests/cluster/k8s/go.mod, e.g. `v1.34.4`."""
    text = (CLUSTER_DIR / "k8s" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\d\S*)", text, re.MULTILINE)
    if match is None:
        raise ControlPlaneError(f"no k8s.io/kubernetes requirement in {CLUSTER_DIR / 'k8s' / 'go.mod'}")
    return match.group(1)


def pin_hash() -> str:
    """sha256 of every go.mod and go.sum under tests/cluster, first 12 hex digits."""
    digest = hashlib.sha256()
    for module in GO_MODULES:
        for name in ("go.mod", "go.sum"):
            digest.update((CLUSTER_DIR / module / name).read_bytes())
    return digest.hexdigest()[:12]


def default_bin_dir() -> Path:
    """$KUBEMAAS_K8S_BIN_DIR, else ~/.cache/kubemaas/k8s-<version>-<pin hash>/bin."""
    override = os.environ.get("KUBEMAAS_K8S_BIN_DIR")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kubemaas" / f"k8s-{k8s_version()}-{pin_hash()}" / "bin"


def missing_binaries(bin_dir: Path, names: Iterable[str] = BINARIES) -> list[str]:
    """The names in `names` that are not executable files in `bin_dir`."""
    return [name for name in names if not os.access(bin_dir / name, os.X_OK)]
