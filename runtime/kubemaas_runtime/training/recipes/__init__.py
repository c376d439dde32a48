"""Built-in recipes: ``digits``, ``sequence`` and ``textgen``."""

from __future__ import annotations

from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes.base import Recipe, RecipeParams, Splits
from kubemaas_runtime.training.recipes.digits import DigitsRecipe
from kubemaas_runtime.training.recipes.sequence import SequenceRecipe
from kubemaas_runtime.training.recipes.textgen import TextgenRecipe

RECIPES: dict[str, Recipe] = {"digits": DigitsRecipe(), "sequence": SequenceRecipe(), "textgen": TextgenRecipe()}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise TrainingError(f"--recipe {name!r}: unknown recipe; choose one of {sorted(RECIPES)}") from None


__all__ = ["RECIPES", "Recipe", "RecipeParams", "Splits", "get_recipe"]
