"""A watch-fed object cache (an informer cache in controller-runtime terms).

The kopf watches the operator already runs (ModelServices, owned Deployments) put every
object they see here, so a sync reads them without a GET; objects the operator writes are
put back from the API's answer. Entries may be a little stale -- every write the operator
makes from them is idempotent (server-side apply, whole-status merge patch) -- and a miss
falls back to the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CacheKey = tuple[str, str, str]
"""(kind, namespace, name)"""


class Cache:
    """Objects by (kind, namespace, name); see the module doc."""
    def __init__(self) -> None:
        self._objects: dict[CacheKey, dict[str, Any]] = {}

    @staticmethod
    def key(obj: Mapping[str, Any]) -> CacheKey:
        """The cache key of an object body (kind, namespace, name)."""
        meta = obj["metadata"]
        return (str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))

    def put(self, obj: Mapping[str, Any], kind: str | None = None) -> None:
        """Store ``obj`` unless the cache already holds a newer version of it.

        A watch event can arrive after the API's answer to our own write; resourceVersions are
        opaque in principle but etcd revisions (integers) in every real API server, so an older
        one is ignored when both are numeric.
        """
        body = dict(obj)
        if kind is not None:
            body.setdefault("kind", kind)
        key = self.key(body)
        held = self._objects.get(key)
        if held is not None and _older(body, held):
            return
        self._objects[key] = body

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object, or None (then read it from the API)."""
        return self._objects.get((kind, namespace, name))

    def select(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Cached objects of ``kind`` in ``namespace`` whose labels include ``labels``."""
        out = []
        for (k, ns, _), obj in self._objects.items():
            if k == kind and ns == namespace:
                have = (obj.get("metadata") or {}).get("labels") or {}
                if all(have.get(key) == value for key, value in labels.items()):
                    out.append(obj)
        return out

    def drop(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object (it was deleted)."""
        self._objects.pop((kind, namespace, name), None)

    def __len__(self) -> int:
        return len(self._objects)


def _older(new: Mapping[str, Any], held: Mapping[str, Any]) -> bool:
    a = str((new.get("metadata") or {}).get("resourceVersion") or "")
    b = str((held.get("metadata") or {}).get("resourceVersion") or "")
    same_object = (new.get("metadata") or {}).get("uid") == (held.get("metadata") or {}).get("uid")
    return same_object and a.isdigit() and b.isdigit() and int(a) < int(b)
