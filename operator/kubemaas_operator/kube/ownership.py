"""Who controls an existing object, and who owns one of its fields (server-side apply). Pure.

Children are applied with ``force=True``, which would silently take over an object of the same
name that another resource controls (a TrainingJob's headless Service, say): ``foreign_controller``
lets a controller refuse that and report a Conflict instead, as controller-runtime's
``SetControllerReference`` refuses an object that already has another controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubemaas_operator.kube.conditions import Condition, false


def foreign_controller(obj: Mapping[str, Any] | None, owner_uid: str) -> str | None:
    """``Kind/name`` of the controller of ``obj`` when it is not the object with ``owner_uid``;
    None when ``obj`` is absent, uncontrolled or ours."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != owner_uid:
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def conflict(child: Mapping[str, Any], owner: str) -> Condition:
    """The Ready=False Conflict condition for a child name taken by another resource."""
    meta = child["metadata"]
    return false(
        "Ready", "Conflict",
        f"{child['kind']} {meta.get('namespace')}/{meta['name']} is controlled by {owner}; "
        "not taking it over (rename this resource or delete the other one)",
    )


def field_owners(obj: Mapping[str, Any] | None, path: tuple[str, ...]) -> list[str]:
    """Managers that own the field at ``path`` (e.g. ``("spec", "replicas")``) per ``managedFields``.

    Only the main resource counts (entries of a subresource such as ``scale`` are left out).
    """
    owners = []
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource"):
            continue
        node: Any = entry.get("fieldsV1") or {}
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, Mapping) else None
        if node is not None:
            owners.append(str(entry.get("manager") or ""))
    return owners
