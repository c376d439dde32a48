"""The model volume's ``sizeLimit``: the spec's, else derived from the bundle's size, else a default. Pure.

A fetch writes ``model.json`` plus every file it lists (``kubemaas_runtime.bundle.fetch_bytes``);
rank 0 of a TrainingJob and the compression Job report that number as ``sizeBytes``. The limit
leaves room for an archive downloaded beside what it extracts to (both sit in the volume until
the archive is deleted) and for filesystem overhead, so an honest fetch is never evicted while a
runaway one is stopped by the volume, not by the node's disk. KServe's storage initializer has no
such limit (its emptyDir is unbounded); the kubelet evicts a pod whose emptyDir exceeds its sizeLimit.
"""

from __future__ import annotations

from kubemaas_operator.controllers.modelservice.spec import DEFAULT_MODEL_SIZE_LIMIT, Storage

HEADROOM_FACTOR = 2
"""The volume holds this many times the bundle (an archive beside its extracted files)."""
HEADROOM_BYTES = 1 << 30
"""Plus this much (1 GiB): filesystem overhead, and a floor for small bundles."""
_MIB = 1 << 20


def derived_size_limit(bundle_bytes: int) -> str:
    """``HEADROOM_FACTOR * bundle_bytes + HEADROOM_BYTES`` as a Kubernetes quantity in whole MiB,
    rounded up: 300 MiB -> ``1624Mi``; 0 -> ``1024Mi``. Raises ValueError for a negative size."""
    if bundle_bytes < 0:
        raise ValueError(f"bundle size must be >= 0 bytes, got {bundle_bytes}")
    total = HEADROOM_FACTOR * bundle_bytes + HEADROOM_BYTES
    return f"{-(-total // _MIB)}Mi"


def model_size_limit(storage: Storage, bundle_bytes: int | None) -> str:
    """The sizeLimit of the serving pod's model emptyDir: ``spec.storage.sizeLimit`` when set,
    else ``derived_size_limit`` of the bundle's recorded size when known, else 10Gi."""
    if storage.size_limit is not None:
        return storage.size_limit
    if bundle_bytes is not None:
        return derived_size_limit(bundle_bytes)
    return DEFAULT_MODEL_SIZE_LIMIT
