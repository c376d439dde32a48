"""``sequence``: a small transformer encoder on a synthetic-but-learnable token task.

The task (generated in code with a fixed seed): a sequence of ``seq_len`` tokens from a vocabulary
of ``vocab`` tokens, where tokens ``0..classes-1`` are "votes"; the label is the vote token that
occurs most often in the FIRST half of the sequence (ties are dropped). ``boost`` extra copies of
the label are planted in the first half and as many copies of a decoy vote in the second half, so
counting over the whole sequence is misleading: the model has to use positions. Input ``tokens``
is ``[batch, seq_len]`` int64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from kubemaas_runtime.training.recipes.base import BuiltinRecipe, RecipeParams, Splits


class SequenceParams(RecipeParams):
    vocab: int = Field(default=16, ge=4, le=10_000)
    classes: int = Field(default=4, ge=2, le=64)
    seq_len: int = Field(default=24, ge=4, le=1024)
    boost: int = Field(default=2, ge=0)
    """Extra copies of the label token planted in each sequence."""
    d_model: int = Field(default=64, ge=8, le=2048)
    heads: int = Field(default=4, ge=1, le=64)
    layers: int = Field(default=2, ge=1, le=24)
    ff: int = Field(default=128, ge=8, le=8192)
    train_size: int = Field(default=3000, ge=64)
    test_size: int = Field(default=1000, ge=32)
    data_seed: int = 1234

    @model_validator(mode="after")
    def _shapes(self) -> SequenceParams:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by heads={self.heads}")
        if self.classes > self.vocab:
            raise ValueError(f"classes={self.classes} must be <= vocab={self.vocab}")
        if self.boost >= self.seq_len // 2:
            raise ValueError(f"boost={self.boost} must be < seq_len/2={self.seq_len // 2}")
        return self


def make_majority_task(p: SequenceParams, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    have = 0
    while have < n:
        m = 2 * (n - have) + 16
        tokens = rng.integers(0, p.vocab, size=(m, p.seq_len))
        planted = rng.integers(0, p.classes, size=m)
        decoy = (planted + rng.integers(1, p.classes, size=m)) % p.classes
        half = p.seq_len // 2
        for _ in range(p.boost):
            tokens[np.arange(m), rng.integers(0, half, size=m)] = planted
            tokens[np.arange(m), rng.integers(half, p.seq_len, size=m)] = decoy
        first = tokens[:, :half]
        counts = np.stack([(first == c).sum(axis=1) for c in range(p.classes)], axis=1)
        top = counts.max(axis=1)
        unique = (counts == top[:, None]).sum(axis=1) == 1
        xs.append(tokens[unique])
        ys.append(counts.argmax(axis=1)[unique])
        have += int(unique.sum())
    return np.concatenate(xs)[:n].astype(np.int64), np.concatenate(ys)[:n].astype(np.int64)


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + feed-forward, written out so the ONNX graph is plain MatMul/Softmax."""

    def __init__(self, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, d = x.shape[1], x.shape[2]
        qkv = self.qkv(self.norm1(x)).reshape(-1, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, t, d)
        x = x + self.proj(out)
        out_x: torch.Tensor = x + self.ff(self.norm2(x))
        return out_x


class SequenceClassifier(nn.Module):
    def __init__(self, p: SequenceParams) -> None:
        super().__init__()
        self.embed = nn.Embedding(p.vocab, p.d_model)
        self.position = nn.Parameter(torch.zeros(1, p.seq_len, p.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(p.d_model, p.heads, p.ff) for _ in range(p.layers)])
        self.norm = nn.LayerNorm(p.d_model)
        self.head = nn.Linear(p.d_model, p.classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(tokens) + self.position)
        logits: torch.Tensor = self.head(self.norm(x).mean(dim=1))
        return logits


class SequenceRecipe(BuiltinRecipe[SequenceParams]):
    name = "sequence"
    epochs = 6
    batch_size = 64
    lr = 2e-3
    input_name = "tokens"
    output_name = "logits"
    params_type = SequenceParams

    def data(self, params: RecipeParams) -> Splits:
        params = self.own(params)
        rng = np.random.default_rng(params.data_seed)
        train_x, train_y = make_majority_task(params, params.train_size, rng)
        test_x, test_y = make_majority_task(params, params.test_size, rng)
        return Splits(train_x, train_y, test_x, test_y, labels=[f"token{c}" for c in range(params.classes)])

    def model(self, params: RecipeParams) -> nn.Module:
        params = self.own(params)
        return SequenceClassifier(params)
