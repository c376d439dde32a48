"""Rebuild a bundle's torch model from its recipe, its recorded hyper-parameters and ``checkpoint.pt``.

Pruning and distillation start from the teacher's torch model, not its ONNX export. A bundle can
be rebuilt when its manifest's ``source`` names a built-in recipe and records that recipe's full
hyper-parameters (``source.hyperparameters``), and the bundle carries ``checkpoint.pt``. A bundle
from a ``uri`` (any ONNX file) or from user code (``kubemaas train --module``) carries no model
definition, so it cannot be rebuilt; ``rebuild_reason`` says so in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kubemaas_runtime.bundle import CHECKPOINT, MANIFEST, Bundle, Manifest, load_bundle
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes import RECIPES, Recipe, RecipeParams, get_recipe


class NotRebuildableError(TrainingError):
    """The bundle's torch model cannot be rebuilt, so it cannot be pruned or distilled."""


@dataclass(frozen=True)
class Teacher:
    """A trained bundle with its torch model rebuilt (CPU, eval mode)."""

    bundle: Bundle
    recipe: Recipe
    params: RecipeParams
    model: nn.Module


def raw_params(values: dict[str, object]) -> dict[str, str]:
    """Hyper-parameters as the ``--set key=value`` strings a recipe validates (None: left to the default)."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items() if v is not None}


def rebuild_reason(manifest: Manifest) -> str | None:
    """Why this bundle's torch model cannot be rebuilt, or None when it can."""
    source = manifest.source
    if source is None or source.recipe is None:
        kind = source.kind if source is not None else "none"
        return (
            f"{MANIFEST} source (kind {kind}) names no built-in recipe: a model from a uri or from user code "
            "(--module) has only its ONNX graph, no torch definition to prune or to distil from; train it "
            f"with a built-in recipe ({', '.join(sorted(RECIPES))})"
        )
    if source.recipe not in RECIPES:
        return f"{MANIFEST} source.recipe {source.recipe!r} is not a built-in recipe ({', '.join(sorted(RECIPES))})"
    if source.hyperparameters is None:
        return (
            f"{MANIFEST} source records recipe {source.recipe!r} but not its hyperparameters (a bundle written "
            "before they were recorded), so the torch model's shapes are unknown; retrain it"
        )
    if CHECKPOINT not in manifest.files:
        return f"{MANIFEST} lists no {CHECKPOINT}: the trained weights are not in the bundle"
    return None


def load_teacher(directory: Path) -> Teacher:
    """Verify the bundle at ``directory`` and rebuild its torch model.

    Raises ``NotRebuildableError`` naming the reason (see ``rebuild_reason``), ``TrainingError``
    when the recorded hyper-parameters are invalid for the recipe, and ``BundleError`` when the
    bundle itself is bad. ``checkpoint.pt`` is read with ``weights_only=True`` (no unpickling).
    """
    bundle = load_bundle(directory)
    reason = rebuild_reason(bundle.manifest)
    if reason is not None:
        raise NotRebuildableError(f"{directory}: cannot prune or distil this model: {reason}")
    source = bundle.manifest.source
    assert source is not None
    assert source.recipe is not None
    assert source.hyperparameters is not None
    recipe = get_recipe(source.recipe)
    params = recipe.params(raw_params(dict(source.hyperparameters)))
    model = recipe.model(params)
    try:
        state = torch.load(directory / CHECKPOINT, map_location="cpu", weights_only=True)
        weights = state["model"] if isinstance(state, dict) and "model" in state else state
        model.load_state_dict(weights)
    except Exception as exc:  # torch raises RuntimeError, pickle's UnpicklingError, KeyError ...
        raise NotRebuildableError(
            f"{directory / CHECKPOINT}: does not fit recipe {recipe.name!r} with hyperparameters "
            f"{params.model_dump()}: {exc}"
        ) from exc
    model.eval()
    return Teacher(bundle=bundle, recipe=recipe, params=params, model=model)
