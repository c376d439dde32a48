"""What a built-in recipe provides: data splits, a model, defaults and typed hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from kubemaas_runtime.training.errors import TrainingError


class RecipeParams(BaseModel):
    """Base of each recipe's ``--set key=value`` hyper-parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=RecipeParams)


@dataclass(frozen=True)
class Splits:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    labels: list[str]


class Recipe(Protocol):
    name: str
    epochs: int
    batch_size: int
    lr: float
    input_name: str
    output_name: str

    def params(self, raw: dict[str, str]) -> RecipeParams: ...

    def data(self, params: RecipeParams) -> Splits: ...

    def model(self, params: RecipeParams) -> nn.Module: ...


class BuiltinRecipe(Generic[P]):
    """Base of the built-in recipes: each declares ``name``, its defaults and ``params_type``
    (a ``RecipeParams`` subclass) as class attributes; ``params`` parses ``--set`` into that
    type and ``own`` narrows the ``RecipeParams`` the loop hands back to it."""

    name: str
    params_type: type[P]

    def params(self, raw: dict[str, str]) -> P:
        """``--set key=value`` pairs as ``params_type``; raises TrainingError naming each bad key."""
        return parse_params(self.name, self.params_type, raw)

    def own(self, params: RecipeParams) -> P:
        """``params`` as this recipe's type; raises TrainingError for another recipe's parameters."""
        if not isinstance(params, self.params_type):
            raise TrainingError(
                f"recipe {self.name}: expected {self.params_type.__name__}, got {type(params).__name__}")
        return params


def parse_params(recipe: str, cls: type[P], raw: dict[str, str]) -> P:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"--set {'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
        )
        raise TrainingError(f"recipe {recipe}: invalid parameters: {problems}") from exc
