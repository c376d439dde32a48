"""What pruning and distillation may change in each built-in recipe's model, in its hyper-parameters' terms.

A student is always ``recipe.model(student_params)`` for some valid hyper-parameters, so every
student bundle records hyper-parameters that rebuild it (it can be pruned or distilled again)
and the training loop can fine-tune it like any recipe model. Structured pruning is therefore
limited to the dimensions a hyper-parameter names:

* ``digits``: ``hidden`` (the first hidden layer; the second is ``hidden // 2``), no depth knob.
* ``sequence``: ``ff`` (hidden units of every block's feed-forward) and ``layers`` (encoder blocks).
  Pruning ``d_model`` or whole attention heads would leave shapes no hyper-parameter describes
  (the recipe ties ``head_dim`` to ``d_model / heads``); distillation changes those instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes.base import RecipeParams


@dataclass(frozen=True)
class Architecture:
    """One recipe's prunable structure and the hyper-parameters that size its model."""

    size_params: frozenset[str]
    """Hyper-parameters a distillation student may set (width/depth); the rest (data, vocabulary,
    classes, sequence length) must equal the teacher's so both see the same inputs and outputs."""
    width_param: str
    """The hyper-parameter that counts the hidden units ``--prune-ratio`` removes."""
    width_layers: Callable[[nn.Module, RecipeParams], list[tuple[nn.Linear, int]]]
    """``(model, student params) -> [(Linear whose output features are hidden units, units to keep)]``."""
    depth_param: str | None = None
    """The hyper-parameter that counts the blocks ``--drop-layers`` removes (None: no depth knob)."""
    depth_path: str | None = None
    """Dotted path of the ``nn.Sequential`` holding those blocks."""
    halve: Callable[[RecipeParams], dict[str, str]] | None = None
    """The default distillation student: each size roughly halved, as ``--set`` values."""


def _linear(module: nn.Module, path: str) -> nn.Linear:
    layer = module.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise TrainingError(f"{path} is a {type(layer).__name__}, expected nn.Linear")
    return layer


def _digits_widths(model: nn.Module, student: RecipeParams) -> list[tuple[nn.Linear, int]]:
    hidden = int(student.model_dump()["hidden"])
    return [(_linear(model, "1"), hidden), (_linear(model, "3"), hidden // 2)]


def _sequence_widths(model: nn.Module, student: RecipeParams) -> list[tuple[nn.Linear, int]]:
    ff = int(student.model_dump()["ff"])
    blocks = model.get_submodule("blocks")
    return [(_linear(block, "ff.0"), ff) for block in blocks.children()]


def _digits_half(params: RecipeParams) -> dict[str, str]:
    return {"hidden": str(max(8, int(params.model_dump()["hidden"]) // 2))}


def _sequence_half(params: RecipeParams) -> dict[str, str]:
    p = params.model_dump()
    heads = int(p["heads"])
    d_model = max(int(p["d_model"]) // 2 // heads * heads, -(-8 // heads) * heads)  # a multiple of heads, >= 8
    return {"d_model": str(d_model), "layers": str(max(1, int(p["layers"]) // 2)), "ff": str(max(8, int(p["ff"]) // 2))}


ARCHITECTURES: dict[str, Architecture] = {
    "digits": Architecture(
        size_params=frozenset({"hidden"}), width_param="hidden", width_layers=_digits_widths, halve=_digits_half
    ),
    "sequence": Architecture(
        size_params=frozenset({"d_model", "heads", "layers", "ff"}),
        width_param="ff",
        width_layers=_sequence_widths,
        depth_param="layers",
        depth_path="blocks",
        halve=_sequence_half,
    ),
}


def architecture(recipe: str) -> Architecture:
    """The recipe's architecture; ``TrainingError`` naming the supported recipes otherwise."""
    try:
        return ARCHITECTURES[recipe]
    except KeyError:
        raise TrainingError(
            f"recipe {recipe!r} has no pruning/distillation plan; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
