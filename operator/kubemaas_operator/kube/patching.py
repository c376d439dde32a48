"""The one status writer of both controllers: a whole desired status -> the JSON merge patch
that makes the stored status equal to it, written through the status subresource.

``desired`` uses None for "this key must be absent"; unchanged keys are left out of the patch,
so an unchanged status costs no write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubemaas_operator.kube.cache import Cache
from kubemaas_operator.kube.client import Kube
from kubemaas_operator.kube.manifests import API_VERSION


def _replacing(old: Any, new: Any) -> Any:
    """``new`` as a merge-patch value that also deletes keys ``old`` had and ``new`` lacks."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = {k: _replacing(old.get(k), v) for k, v in new.items()}
        out.update({k: None for k in old if k not in new})
        return out
    return new


def _stored(value: Any) -> Any:
    """``value`` as the API server stores it after a merge patch: None-valued keys are absent."""
    if isinstance(value, Mapping):
        return {k: _stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch turning ``old`` into ``new`` (keys of ``new``), or None when equal."""
    patch = {
        k: _replacing(old.get(k), v)
        for k, v in new.items()
        if old.get(k) != _stored(v) and not (v is None and k not in old)
    }
    return patch or None


async def write_status(
    kube: Kube, kind: str, namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any],
    *, cache: Cache | None = None,
) -> dict[str, Any] | None:
    """Patch the custom resource's status from ``old`` to ``new``; the patch written (None when
    nothing changed or the object is gone). The stored object goes back into ``cache``."""
    patch = status_patch(old, new)
    if patch is None:
        return None
    written = await kube.patch_status(API_VERSION, kind, namespace, name, patch)
    if written is None:
        return None
    if cache is not None:
        cache.put(written)
    return patch
