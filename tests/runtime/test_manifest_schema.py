"""The manifest's schema: the declared batch axis and per-file sizes (schema version 2)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubemaas_runtime.bundle import SCHEMA_VERSION, Manifest, TensorSpec


def _manifest(batch_axis: int | None, out_shape: list[int]) -> Manifest:
    return Manifest.model_validate({
        "name": "m",
        "inputs": [TensorSpec(name="x", datatype="FP32", shape=[-1, 4]).model_dump()],
        "outputs": [TensorSpec(name="y", datatype="FP32", shape=out_shape).model_dump()],
        "batchAxis": batch_axis,
        "schemaVersion": SCHEMA_VERSION,
    })


def test_batch_axis_must_be_dynamic_in_every_tensor() -> None:
    with pytest.raises(ValidationError, match=r"batchAxis 0: 'y' has shape \[3\]"):
        _manifest(0, [3])


def test_batch_axis_beyond_a_tensors_rank_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"batchAxis 2: 'x' has shape \[-1, 4\]"):
        _manifest(2, [-1, 2, -1])


def test_no_batch_axis_is_the_default() -> None:
    assert _manifest(None, [3]).batch_axis is None
    assert "batchAxis" not in _manifest(None, [3]).dump()


def test_a_newer_schema_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="schemaVersion"):
        Manifest.model_validate({
            "name": "m", "schemaVersion": SCHEMA_VERSION + 1,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
        })
