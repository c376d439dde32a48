"""``TrainConfig``: the validated arguments of one ``kubemaas train`` run (built-in recipe or user code)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubemaas_runtime.storage.errors import StorageError
from kubemaas_runtime.storage.uris import HttpLocation, is_archive, parse_uri
from kubemaas_runtime.training.errors import TrainingError

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"


class TrainConfig(BaseModel):
    """What to train and where the bundle goes; user functions (``--module``) receive this object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str = Field(min_length=1)
    """Bundle location: a path or any storage URI (pvc://, s3:// ...)."""
    recipe: str | None = None
    module: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """User code as ``pkg.mod:fn``; ``fn(config)`` is called on every rank."""
    epochs: int | None = Field(default=None, ge=1, le=100_000)
    batch_size: int | None = Field(default=None, ge=1)
    """GLOBAL batch size: split evenly across ranks, so results do not depend on the world size."""
    lr: float | None = Field(default=None, gt=0)
    seed: int = 0
    prune_amount: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of weights zeroed by magnitude pruning before export (0 = off)."""
    name: str | None = Field(default=None, max_length=63, pattern=NAME_PATTERN)
    params: dict[str, str] = Field(default_factory=dict)
    """Recipe hyper-parameters from ``--set key=value`` (validated by the recipe)."""

    @model_validator(mode="after")
    def _one_source(self) -> TrainConfig:
        if (self.recipe is None) == (self.module is None):
            raise ValueError("give exactly one of --recipe or --module")
        return self

    @field_validator("output")
    @classmethod
    def _writable(cls, output: str) -> str:
        """Fail before training, not at the first checkpoint, when the output cannot be written."""
        try:
            location = parse_uri(output)
        except StorageError as exc:
            raise ValueError(str(exc)) from None
        if isinstance(location, HttpLocation) or is_archive(output):
            raise ValueError(f"{output!r} is read-only; write bundles to a path, pvc:// or s3://")
        return output


def build_config(**values: Any) -> TrainConfig:
    """Validate, turning pydantic's errors into one line naming each field and value."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-') or 'arguments'}: {e['msg']}"
            + (f" (got {e['input']!r})" if e["loc"] else "")
            for e in exc.errors()
        )
        raise TrainingError(f"invalid training arguments: {problems}") from exc


def parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise TrainingError(f"--set {pair!r}: expected key=value with a lower-case key")
        params[key] = value
    return params
