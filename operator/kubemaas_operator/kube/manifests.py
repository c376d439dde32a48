"""Shared pieces of every child object: labels, owner references, security, names, hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

GROUP = "kubemaas.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MODELSERVICE = f"{GROUP}/modelservice"
"""Set on every object (and pod) a ModelService owns; the watches map events back through it."""
LABEL_TRAININGJOB = f"{GROUP}/trainingjob"
"""Set on every object (and pod) a TrainingJob owns."""

ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
"""Pod-template annotation: a hash of everything that should roll the pods when it changes."""

MANAGED_BY = "kubemaas-operator"
MAX_NAME = 63


def labels(component: str, instance: str, **extra: str) -> dict[str, str]:
    """Recommended app.kubernetes.io labels plus owner-specific ones (e.g. LABEL_MODELSERVICE)."""
    out = {
        LABEL_NAME: "kubemaas",
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "kubemaas",
    }
    out.update(extra)
    return out


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to a custom resource body (apiVersion, kind, metadata.name/uid)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def pod_security_context(run_as_user: int) -> dict[str, Any]:
    """Pod-level: non-root, fixed UID/GID, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level: read-only root, no privilege escalation, every capability dropped."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def storage_env_from(secret: str | None, *, optional: bool) -> list[dict[str, Any]]:
    """``envFrom`` exposing a storage Secret's keys (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) as env.

    The operator-wide secret is ``optional`` (namespaces without it still run their pods); one a
    resource names itself is required, so a typo surfaces as CreateContainerConfigError.
    """
    if not secret:
        return []
    return [{"secretRef": {"name": secret, "optional": optional}}]


def effective_storage_secret(own: str | None, operator_wide: str) -> tuple[str | None, bool]:
    """(secret name, optional): the resource's own secret wins over the operator-wide one."""
    if own:
        return own, False
    return (operator_wide or None), True


def image_pull_secrets(names: Sequence[str]) -> list[dict[str, str]]:
    """A pod spec's ``imagePullSecrets`` from secret names."""
    return [{"name": n} for n in names]


def stable_hash(value: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys), hex, first ``length`` chars."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def child_name(owner: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """``<owner>-<suffix>`` cut to ``limit`` characters without a trailing dash.

    The owner part is shortened (never the suffix), so names stay deterministic and distinct.
    """
    if not suffix:
        return owner[:limit].rstrip("-")
    room = limit - len(suffix) - 1
    return f"{owner[:room].rstrip('-')}-{suffix}"


def pvc_claim(uri: str) -> str | None:
    """The claim name of a ``pvc://<claim>/<path>`` URI, else None."""
    if not uri.startswith("pvc://"):
        return None
    claim = uri[len("pvc://"):].split("/", 1)[0]
    return claim or None


def pvc_volume(claim: str, pvc_root: str, *, read_only: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) mounting ``claim`` at ``<pvc_root>/<claim>`` (contract 2)."""
    vol_name = child_name("pvc", claim)
    volume = {"name": vol_name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
    mount = {"name": vol_name, "mountPath": f"{pvc_root.rstrip('/')}/{claim}", "readOnly": read_only}
    return volume, mount


def selector_string(match_labels: Mapping[str, str]) -> str:
    """A label selector string (``a=b,c=d``, sorted) as the scale subresource wants it."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
