"""``digits``: scikit-learn's 8x8 handwritten digits (ships with the package; no download), an MLP.

Inputs are the raw pixel intensities 0..16 (``[batch, 64]`` float32); the model scales them
itself, so the served model takes the same values as ``sklearn.datasets.load_digits``.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from kubemaas_runtime.training.recipes.base import BuiltinRecipe, RecipeParams, Splits


class DigitsParams(RecipeParams):
    hidden: int = Field(default=256, ge=8, le=4096)
    """Width of the first hidden layer (the second is half of it)."""
    test_fraction: float = Field(default=0.2, gt=0.05, lt=0.9)
    """Held-out share of the 1797 images (a stratified split with a fixed seed)."""


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class DigitsRecipe(BuiltinRecipe[DigitsParams]):
    name = "digits"
    epochs = 10
    batch_size = 64
    lr = 1e-2
    input_name = "input"
    output_name = "logits"
    params_type = DigitsParams

    def data(self, params: RecipeParams) -> Splits:
        params = self.own(params)
        x, y = load_digits(return_X_y=True)
        train_x, test_x, train_y, test_y = train_test_split(
            x.astype(np.float32), y.astype(np.int64), test_size=params.test_fraction, stratify=y, random_state=0
        )
        return Splits(train_x, train_y, test_x, test_y, labels=[str(d) for d in range(10)])

    def model(self, params: RecipeParams) -> nn.Module:
        params = self.own(params)
        h = params.hidden
        return nn.Sequential(
            Scale(1.0 / 16.0),
            nn.Linear(64, h),
            nn.ReLU(),
            nn.Linear(h, h // 2),
            nn.ReLU(),
            nn.Linear(h // 2, 10),
        )
