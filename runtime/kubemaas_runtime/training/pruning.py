"""Magnitude pruning (torch.nn.utils.prune), made permanent so the export carries plain zeros.

ONNX Runtime runs these weights dense: pruning shrinks nothing and speeds nothing up by itself
(a compressed file or a sparse kernel would be needed); it only reports the sparsity reached.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def prune_model(model: nn.Module, amount: float) -> float:
    """Zero the ``amount`` fraction of smallest-magnitude weights (globally over Linear/Conv layers),
    remove the pruning re-parametrisation, and return the sparsity of those weights."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount {amount!r} must be in [0, 1)")
    targets = prunable_weights(model)
    if amount > 0 and targets:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        for module, name in targets:
            prune.remove(module, name)  # type: ignore[no-untyped-call]
    return sparsity(model)


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the prunable weights."""
    total = zeros = 0
    with torch.no_grad():
        for module, name in prunable_weights(model):
            weight = getattr(module, name)
            total += weight.numel()
            zeros += int((weight == 0).sum().item())
    return zeros / total if total else 0.0
