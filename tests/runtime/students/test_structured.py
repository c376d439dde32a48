"""Structured pruning removes parameters physically, keeps the graph consistent and ranks by importance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kubemaas_runtime.bundle import MANIFEST, Bundle, load_bundle
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes import get_recipe
from kubemaas_runtime.training.settings import TrainingSettings
from kubemaas_runtime.training.students.architectures import architecture
from kubemaas_runtime.training.students.build import StudentOptions, make_student
from kubemaas_runtime.training.students.structured import IMPORTANCES, PruneTarget, count_parameters, prune
from kubemaas_runtime.training.students.teachers import load_teacher


def _rows(bundle: Bundle, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = load_teacher(bundle.path)
    splits = teacher.recipe.data(teacher.params)
    return torch.from_numpy(splits.train_x[:n]), torch.from_numpy(splits.train_y[:n])


def _onnx_parameters(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_pruning_half_the_hidden_units_of_digits_removes_them(digits_teacher: Bundle, importance: str) -> None:
    teacher = load_teacher(digits_teacher.path)
    x, y = _rows(digits_teacher)
    pruned = prune(teacher.recipe, teacher.model, teacher.params, architecture("digits"),
                   PruneTarget(width_ratio=0.5), importance, x, y)  # type: ignore[arg-type]
    shapes = [tuple(m.weight.shape) for m in pruned.model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(128, 64), (64, 128), (10, 64)]  # was (256, 64), (128, 256), (10, 128)
    assert count_parameters(teacher.model) == 256 * 64 + 256 + 128 * 256 + 128 + 10 * 128 + 10 == 50_826
    assert count_parameters(pruned.model) == 128 * 64 + 128 + 64 * 128 + 64 + 10 * 64 + 10 == 17_226
    assert pruned.params.model_dump()["hidden"] == 128


def test_pruning_drops_dead_units_and_leaves_the_function_unchanged(digits_teacher: Bundle) -> None:
    """Units whose weights are all zero contribute nothing: both criteria must rank them last,
    and removing exactly them (plus their coupled input columns) must not change any output."""
    teacher = load_teacher(digits_teacher.path)
    dead = list(range(0, 256, 4))  # 64 of the 256 first-layer units
    with torch.no_grad():
        first = teacher.model.get_submodule("1")
        assert isinstance(first, nn.Linear)
        first.weight[dead] = 0.0
        first.bias[dead] = 0.0
        second = teacher.model.get_submodule("3")
        assert isinstance(second, nn.Linear)
        second.weight[:, dead] = 0.0  # the coupled input columns too: the whole group is zero
        second.weight[::4] = 0.0  # 32 of its 128 units
        second.bias[::4] = 0.0
        head = teacher.model.get_submodule("5")
        assert isinstance(head, nn.Linear)
        head.weight[:, ::4] = 0.0
    x, y = _rows(digits_teacher)
    for importance in IMPORTANCES:
        pruned = prune(teacher.recipe, teacher.model, teacher.params, architecture("digits"),
                       PruneTarget(width_ratio=0.25), importance, x, y)
        assert count_parameters(pruned.model) < count_parameters(teacher.model)
        with torch.no_grad():
            torch.testing.assert_close(pruned.model(x), teacher.model(x), rtol=1e-5, atol=1e-5)


def test_sequence_drops_a_layer_and_half_the_feed_forward_units(sequence_teacher: Bundle) -> None:
    teacher = load_teacher(sequence_teacher.path)
    x, y = _rows(sequence_teacher)
    pruned = prune(teacher.recipe, teacher.model, teacher.params, architecture("sequence"),
                   PruneTarget(width_ratio=0.5, drop_layers=1), "taylor", x, y)
    assert pruned.params.model_dump()["layers"] == 1
    assert pruned.params.model_dump()["ff"] == 32
    assert len(pruned.dropped_blocks) == 1
    blocks = pruned.model.get_submodule("blocks")
    assert isinstance(blocks, nn.Sequential)
    assert len(blocks) == 1
    d, ff = 32, 64
    per_block = (2 * 2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d)
    pruned_block = per_block - (d * 32 + 32) - (32 * d)  # half the ff units: their rows and columns
    assert count_parameters(teacher.model) - count_parameters(pruned.model) == per_block + (per_block - pruned_block)


def test_drop_every_layer_is_refused(sequence_teacher: Bundle) -> None:
    teacher = load_teacher(sequence_teacher.path)
    x, y = _rows(sequence_teacher)
    with pytest.raises(TrainingError, match="--drop-layers 2: the model has 2 layers; drop 0 to 1"):
        prune(teacher.recipe, teacher.model, teacher.params, architecture("sequence"),
              PruneTarget(width_ratio=0.0, drop_layers=2), "taylor", x, y)


def test_digits_has_no_layers_to_drop() -> None:
    recipe = get_recipe("digits")
    with pytest.raises(TrainingError, match="recipe 'digits' has no layers to drop"):
        prune(recipe, recipe.model(recipe.params({})), recipe.params({}), architecture("digits"),
              PruneTarget(drop_layers=1), "taylor", torch.zeros(2, 64), torch.zeros(2, dtype=torch.int64))


def test_pruned_student_bundle_is_smaller_fine_tuned_and_rebuildable(
    tmp_path: Path, digits_teacher: Bundle, settings: TrainingSettings
) -> None:
    options = StudentOptions(method="prune", prune_ratio=0.75, epochs=2)
    artifact = make_student(digits_teacher.path, options, str(tmp_path / "pruned"), settings)
    assert artifact is not None
    student = load_bundle(tmp_path / "pruned")
    assert _onnx_parameters(student.model_path) == 64 * 64 + 64 + 32 * 64 + 32 + 10 * 32 + 10  # hidden 64
    assert _onnx_parameters(digits_teacher.model_path) == 50_826
    lineage = json.loads((student.path / MANIFEST).read_text())["source"]["student"]
    assert lineage["method"] == "prune"
    assert lineage["teacher"]["sha256"] == digits_teacher.digest
    assert (lineage["teacher"]["parameters"], lineage["parameters"]) == (50_826, 6_570)
    assert student.manifest.metrics["accuracy"] >= 0.9
    assert student.manifest.metrics["accuracy"] >= lineage["accuracyBeforeFineTune"]  # the fine-tune helped
    assert student.manifest.name == "digits-pruned"
    rebuilt = load_teacher(student.path)  # a student is a recipe model: it can be pruned again
    assert count_parameters(rebuilt.model) == 6_570
