"""``Objective``: what a built-in recipe's training run optimises and starts from, when not the defaults.

The training loop (``loop.train_recipe``) trains ``recipe.model(params)`` from a random start with
cross-entropy on the labels. Students (``training/students``) need two changes and nothing else,
so the same loop (DDP, DistributedSampler, per-epoch checkpoints, resume) trains them:

* ``loss``: e.g. knowledge distillation, ``loss(logits, inputs, labels)`` with the teacher run on
  ``inputs`` inside the closure;
* ``initial_state``: e.g. the weights of a structurally pruned model, whose shapes are those of
  ``recipe.model(params)`` for the student's hyper-parameters.

``lineage`` is recorded in the bundle manifest's ``source`` (teacher digest, method, settings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits [batch, classes], inputs [batch, ...], labels [batch]) -> scalar loss``."""


@dataclass(frozen=True)
class Objective:
    """Overrides of the loop's defaults; every field None/empty means "as for any recipe run"."""

    loss: LossFn | None = None
    """Replaces ``cross_entropy(logits, labels)``; must be differentiable in ``logits``."""
    initial_state: Mapping[str, torch.Tensor] | None = None
    """A ``state_dict`` loaded (strictly) into ``recipe.model(params)`` before training."""
    lineage: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields of the manifest's ``source`` (JSON-serialisable)."""
