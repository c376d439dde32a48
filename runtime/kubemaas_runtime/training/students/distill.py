"""Knowledge distillation: a student learns the teacher's softened outputs and the labels.

The loss of Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015)::

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with ``s``/``t`` the student's/teacher's logits and ``T`` the temperature; ``T^2`` keeps the soft
term's gradients on the scale of the hard term's as ``T`` changes. ``alpha = 1`` learns from the
teacher alone (no labels). The teacher runs inside the loss on each batch the loop feeds the
student, so the existing training loop (DDP, sampler, checkpoints) trains students unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.objectives import LossFn
from kubemaas_runtime.training.recipes.base import Recipe, RecipeParams
from kubemaas_runtime.training.students.architectures import Architecture
from kubemaas_runtime.training.students.teachers import raw_params


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.'s loss; ``student``/``teacher`` are logits ``[batch, classes]``, ``labels`` ``[batch]``.

    The KL term is averaged over the batch (``batchmean``, the true KL per row).
    """
    if temperature <= 0:
        raise ValueError(f"temperature {temperature!r} must be > 0")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha!r} must be in [0, 1]")
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student / temperature, dim=-1),
        nn.functional.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature * temperature)
    if alpha == 1.0:
        return soft
    hard = nn.functional.cross_entropy(student, labels)
    return alpha * soft + (1.0 - alpha) * hard


def teacher_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """A loop loss that runs the frozen ``teacher`` (eval mode, no gradients) on each batch."""
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        nonlocal teacher
        if next(teacher.parameters()).device != inputs.device:
            teacher = teacher.to(inputs.device)
        with torch.no_grad():
            target = teacher(inputs)
        return distillation_loss(logits, target, labels, temperature, alpha)

    return loss


def distill_params(recipe: Recipe, params: RecipeParams, arch: Architecture, sizes: dict[str, str]) -> RecipeParams:
    """The teacher's hyper-parameters with the student's width/depth ``sizes`` (``--set key=value``).

    Only size hyper-parameters may change (the student must read the teacher's inputs and give its
    outputs); raises ``TrainingError`` naming the key otherwise, or the recipe's own validation error.
    """
    if not sizes:
        raise TrainingError(
            f"distillation needs the student's size: --set KEY=VALUE with KEY in {', '.join(sorted(arch.size_params))}"
        )
    fixed = sorted(set(sizes) - arch.size_params)
    if fixed:
        raise TrainingError(
            f"--set {fixed[0]}={sizes[fixed[0]]}: not a size of recipe {recipe.name!r}; a student may set only "
            f"{', '.join(sorted(arch.size_params))} (the rest must equal the teacher's)"
        )
    return recipe.params({**raw_params(params.model_dump()), **sizes})
