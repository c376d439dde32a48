"""``kubemaas train --module pkg.mod:fn``: user code on every rank, with the same helpers.

``fn(config: TrainConfig)`` calls ``init_distributed()`` and, when done, ``save_bundle(...,
output=config.output, name=...)``; rank 0's ``save_bundle`` writes the bundle, prints the ``done``
event and writes the termination message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from kubemaas_runtime.training.bundles import Artifact, last_artifact
from kubemaas_runtime.training.config import TrainConfig
from kubemaas_runtime.training.distributed import current
from kubemaas_runtime.training.errors import TrainingError


def load_function(spec: str) -> Callable[[TrainConfig], Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainingError(f"--module {spec!r}: cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TrainingError(f"--module {spec!r}: {module_name} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def run_module(config: TrainConfig) -> Artifact | None:
    assert config.module is not None
    fn = load_function(config.module)
    before = last_artifact()
    fn(config)
    artifact = last_artifact()
    if current().is_primary and (artifact is None or artifact is before):
        raise TrainingError(f"--module {config.module!r} returned on rank 0 without calling save_bundle()")
    return artifact if current().is_primary else None
