"""Structured pruning of a recipe model: remove whole hidden units and whole blocks, physically.

Hidden units are removed with Torch-Pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards
Any Structural Pruning", CVPR 2023): asking it to prune output features of one ``nn.Linear`` yields
the *group* of every coupled parameter slice (the next layer's input features, ...), which it
removes together, so the graph stays consistent. Units are ranked per group by

* ``taylor``: the first-order Taylor score ``|dL/dw * w|`` summed over the group's weights
  (Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019), gradients
  of the label loss on a sample of training rows (``GroupTaylorImportance``);
* ``magnitude``: the group's L2 norm (``GroupMagnitudeImportance(p=2)``).

Blocks (``--drop-layers N``) are ranked by how much the sample's loss rises when a block is
skipped (an ablation score, the idea behind ShortGPT's layer removal, Men et al. 2024), and the
N least useful are removed. Widths and depths are chosen so the result is exactly
``recipe.model(student_params)`` (see ``architectures.py``), which ``prune`` checks by loading it.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes.base import Recipe, RecipeParams
from kubemaas_runtime.training.students.architectures import Architecture
from kubemaas_runtime.training.students.teachers import raw_params

Importance = Literal["taylor", "magnitude"]
IMPORTANCES: tuple[Importance, ...] = ("taylor", "magnitude")


@dataclass(frozen=True)
class PruneTarget:
    """How much to remove."""

    width_ratio: float = 0.5
    """Fraction of the hidden units (``Architecture.width_param``) to remove, in [0, 1)."""
    drop_layers: int = 0
    """Blocks to remove (``Architecture.depth_param``), fewer than the model has."""


@dataclass(frozen=True)
class Pruned:
    """The pruned model and what it is, in the recipe's terms."""

    model: nn.Module
    params: RecipeParams
    """Student hyper-parameters: ``recipe.model(params)`` has exactly the pruned model's shapes."""
    dropped_blocks: list[int]
    """Indices (in the teacher) of the removed blocks."""


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (what pruning is meant to reduce)."""
    return sum(p.numel() for p in model.parameters())


def student_params(
    recipe: Recipe, params: RecipeParams, arch: Architecture, target: PruneTarget
) -> RecipeParams:
    """The teacher's hyper-parameters with the width reduced by ``width_ratio`` and the depth by
    ``drop_layers``; raises ``TrainingError`` naming the flag when the target is out of range."""
    if not 0.0 <= target.width_ratio < 1.0:
        raise TrainingError(f"--prune-ratio {target.width_ratio!r}: must be in [0, 1)")
    raw = params.model_dump()
    width = int(raw[arch.width_param])
    raw[arch.width_param] = max(1, round(width * (1.0 - target.width_ratio)))
    if target.drop_layers:
        if arch.depth_param is None:
            raise TrainingError(f"--drop-layers {target.drop_layers}: recipe {recipe.name!r} has no layers to drop")
        depth = int(raw[arch.depth_param])
        if not 0 <= target.drop_layers < depth:
            raise TrainingError(
                f"--drop-layers {target.drop_layers}: the model has {depth} layers; drop 0 to {depth - 1}"
            )
        raw[arch.depth_param] = depth - target.drop_layers
    return recipe.params(raw_params(raw))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


@torch.no_grad()
def block_scores(model: nn.Module, blocks: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Loss increase on ``(x, y)`` when each block is skipped (higher = more useful)."""
    model.eval()
    base = float(_loss(model, x, y))
    scores = []
    for i in range(len(blocks)):
        kept = blocks[i]
        blocks[i] = nn.Identity()
        try:
            scores.append(float(_loss(model, x, y)) - base)
        finally:
            blocks[i] = kept
    return scores


def drop_blocks(model: nn.Module, path: str, count: int, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Remove the ``count`` blocks of ``model.<path>`` whose removal raises the loss least; their indices."""
    blocks = model.get_submodule(path)
    if not isinstance(blocks, nn.Sequential):
        raise TrainingError(f"{path} is a {type(blocks).__name__}, expected nn.Sequential")
    scores = block_scores(model, blocks, x, y)
    dropped = sorted(sorted(range(len(blocks)), key=lambda i: scores[i])[:count])
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, nn.Sequential(*(b for i, b in enumerate(blocks) if i not in dropped)))
    return dropped


def _scorer(importance: Importance) -> tp.importance.Importance:
    if importance == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    if importance == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    raise TrainingError(f"--importance {importance!r}: choose one of {', '.join(IMPORTANCES)}")


def prune_widths(
    model: nn.Module,
    layers: list[tuple[nn.Linear, int]],
    importance: Importance,
    x: torch.Tensor,
    y: torch.Tensor,
) -> None:
    """Keep the ``keep`` most important output features of each listed layer (and everything coupled).

    All groups are scored before any is pruned, so every score sees the unpruned model.
    """
    scorer = _scorer(importance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unwrapped parameters" (e.g. a position table) we never prune
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:2])
    if importance == "taylor":
        model.zero_grad(set_to_none=True)
        model.eval()
        _loss(model, x, y).backward()  # type: ignore[no-untyped-call]
    plan: list[tuple[nn.Linear, list[int]]] = []
    for layer, keep in layers:
        width = layer.out_features
        if not 0 < keep <= width:
            raise TrainingError(f"cannot keep {keep} of the {width} output features of {layer}")
        group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=list(range(width)))
        scores = scorer(group)
        if scores is None:
            raise TrainingError(f"Torch-Pruning found no weights to score for {layer}")
        plan.append((layer, torch.argsort(scores)[: width - keep].tolist()))
    for layer, drop in plan:
        if drop:
            group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=drop)
            if not graph.check_pruning_group(group):
                raise TrainingError(f"Torch-Pruning refuses to remove {len(drop)} features of {layer}")
            group.prune()
    model.zero_grad(set_to_none=True)


def prune(
    recipe: Recipe,
    model: nn.Module,
    params: RecipeParams,
    arch: Architecture,
    target: PruneTarget,
    importance: Importance,
    x: torch.Tensor,
    y: torch.Tensor,
) -> Pruned:
    """A pruned copy of ``model`` (``model`` is untouched).

    ``x``/``y``: training rows and labels that score importance (Taylor gradients, block ablation).
    Raises ``TrainingError`` when the target is out of range or the pruned model does not have the
    shapes of ``recipe.model(student params)``.
    """
    student = student_params(recipe, params, arch, target)
    pruned = copy.deepcopy(model).cpu()
    dropped: list[int] = []
    if target.drop_layers:
        assert arch.depth_path is not None
        dropped = drop_blocks(pruned, arch.depth_path, target.drop_layers, x, y)
    prune_widths(pruned, arch.width_layers(pruned, student), importance, x, y)
    for p in pruned.parameters():
        p.grad = None
    reference = recipe.model(student)
    try:
        reference.load_state_dict(pruned.state_dict())
    except RuntimeError as exc:
        raise TrainingError(f"the pruned model does not match recipe {recipe.name!r} at {student}: {exc}") from exc
    return Pruned(model=reference, params=student, dropped_blocks=dropped)
