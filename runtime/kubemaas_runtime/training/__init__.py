"""The training runtime: ``kubemaas train`` and the helpers user code calls.

    from kubemaas_runtime.training import init_distributed, save_bundle, prune_model
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubemaas_runtime.training.bundles import Artifact, save_bundle
    from kubemaas_runtime.training.config import TrainConfig
    from kubemaas_runtime.training.distributed import DistInfo, init_distributed
    from kubemaas_runtime.training.pruning import prune_model

_LAZY = {
    "Artifact": "kubemaas_runtime.training.bundles",
    "save_bundle": "kubemaas_runtime.training.bundles",
    "TrainConfig": "kubemaas_runtime.training.config",
    "DistInfo": "kubemaas_runtime.training.distributed",
    "init_distributed": "kubemaas_runtime.training.distributed",
    "prune_model": "kubemaas_runtime.training.pruning",
}


def __getattr__(name: str) -> Any:
    """Import torch-heavy helpers on first use, so ``training.launch`` stays light."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["Artifact", "DistInfo", "TrainConfig", "init_distributed", "prune_model", "save_bundle"]
