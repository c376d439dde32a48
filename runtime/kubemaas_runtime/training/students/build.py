"""``make_student``: prune or distil a teacher bundle into a student bundle, trained by the recipe loop.

* ``prune``: Torch-Pruning removes ``prune_ratio`` of the hidden units (and ``drop_layers`` blocks)
  from the teacher's torch model; the recipe loop then fine-tunes it for a few epochs, by default
  against the unpruned teacher's soft targets plus the labels (``alpha`` 0.5).
* ``distill``: a fresh student of the same recipe with smaller width/depth (``sizes``, e.g.
  ``{"d_model": "32", "layers": "1"}``) is trained by the recipe loop on the teacher's softened
  logits plus the labels.

Either way the student is ``recipe.model(student params)`` trained by ``loop.train_recipe`` (so it
runs distributed under the same env contract as any TrainingJob) and written with ``save_bundle``:
``model.onnx``, ``model.json`` whose ``source`` records the student's hyper-parameters and a
``student`` entry (method, teacher digest, parameter counts), the teacher's held-out ``eval.npz``
and ``checkpoint.pt``. Students then enter ``kubemaas compress --student`` like any variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from kubemaas_runtime.training.bundles import Artifact
from kubemaas_runtime.training.config import build_config
from kubemaas_runtime.training.loop import evaluate, train_recipe
from kubemaas_runtime.training.objectives import Objective
from kubemaas_runtime.training.settings import TrainingSettings
from kubemaas_runtime.training.students.architectures import architecture
from kubemaas_runtime.training.students.distill import distill_params, teacher_loss
from kubemaas_runtime.training.students.structured import Importance, PruneTarget, count_parameters, prune
from kubemaas_runtime.training.students.teachers import load_teacher, raw_params

Method = Literal["prune", "distill"]
METHODS: tuple[Method, ...] = ("prune", "distill")
SUFFIX: dict[Method, str] = {"prune": "pruned", "distill": "distilled"}


class StudentOptions(BaseModel):
    """How to make one student; ``None`` fields take the method's default (see each field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    prune_ratio: float = Field(default=0.5, ge=0.0, lt=1.0)
    """prune: fraction of the hidden units removed (digits ``hidden``, sequence ``ff``)."""
    drop_layers: int = Field(default=0, ge=0)
    """prune: blocks removed (sequence ``layers``)."""
    importance: Importance = "taylor"
    """prune: how units are ranked, ``taylor`` (|grad x weight|) or ``magnitude`` (L2 norm)."""
    score_rows: int = Field(default=512, ge=1)
    """prune: training rows whose loss scores importance."""
    sizes: dict[str, str] = Field(default_factory=dict)
    """distill: the student's width/depth hyper-parameters, e.g. ``{"layers": "1"}``."""
    temperature: float = Field(default=2.0, gt=0.0)
    """Softmax temperature of the distillation term."""
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    """Weight of the distillation term; 1 = teacher's soft targets only (no labels), 0 = labels only."""
    epochs: int | None = Field(default=None, ge=1)
    """Training epochs; default: half the recipe's for prune (a short fine-tune), the recipe's for distill."""
    batch_size: int | None = Field(default=None, ge=1)
    """Global batch size; default: the recipe's."""
    lr: float | None = Field(default=None, gt=0.0)
    """Learning rate; default: the recipe's, halved for prune (the weights are already trained)."""
    seed: int = 0


def _name(teacher: str, method: Method) -> str:
    return f"{teacher[: 62 - len(SUFFIX[method])].rstrip('-_.')}-{SUFFIX[method]}"


def make_student(
    teacher_dir: Path,
    options: StudentOptions,
    output: str,
    settings: TrainingSettings | None = None,
    name: str | None = None,
) -> Artifact | None:
    """Build, train and write one student of the bundle at ``teacher_dir`` (a local directory).

    Returns the artifact on rank 0, None on other ranks. Raises ``NotRebuildableError`` for a bundle
    without a recipe, its hyper-parameters or checkpoint, and ``TrainingError`` naming the option at
    fault for an impossible target (e.g. dropping every layer, or a size the recipe refuses).
    """
    settings = settings or TrainingSettings()
    teacher = load_teacher(teacher_dir)
    recipe, arch = teacher.recipe, architecture(teacher.recipe.name)
    lineage: dict[str, Any] = {
        "method": options.method,
        "teacher": {
            "name": teacher.bundle.manifest.name,
            "sha256": teacher.bundle.digest,
            "hyperparameters": teacher.params.model_dump(),
            "parameters": count_parameters(teacher.model),
        },
        "temperature": options.temperature,
        "alpha": options.alpha,
    }
    initial: dict[str, torch.Tensor] | None = None
    if options.method == "prune":
        splits = recipe.data(teacher.params)
        x = torch.from_numpy(splits.train_x[: options.score_rows])
        y = torch.from_numpy(splits.train_y[: options.score_rows])
        target = PruneTarget(width_ratio=options.prune_ratio, drop_layers=options.drop_layers)
        pruned = prune(recipe, teacher.model, teacher.params, arch, target, options.importance, x, y)
        params, initial = pruned.params, pruned.model.state_dict()
        held_out = evaluate(pruned.model, torch.from_numpy(splits.test_x), torch.from_numpy(splits.test_y))
        lineage |= {
            "accuracyBeforeFineTune": held_out.accuracy,
            "pruneRatio": options.prune_ratio,
            "dropLayers": options.drop_layers,
            "droppedBlocks": pruned.dropped_blocks,
            "importance": options.importance,
        }
        epochs = options.epochs or max(1, recipe.epochs // 2)
        lr = options.lr or recipe.lr / 2
    else:
        params = distill_params(recipe, teacher.params, arch, options.sizes)
        epochs = options.epochs or recipe.epochs
        lr = options.lr or recipe.lr
    lineage["parameters"] = count_parameters(recipe.model(params))
    config = build_config(
        output=output,
        recipe=recipe.name,
        epochs=epochs,
        batch_size=options.batch_size,
        lr=lr,
        seed=options.seed,
        name=name or _name(teacher.bundle.manifest.name, options.method),
        params=raw_params(params.model_dump()),
    )
    loss = teacher_loss(teacher.model, options.temperature, options.alpha) if options.alpha > 0 else None
    objective = Objective(loss=loss, initial_state=initial, lineage={"student": lineage})
    return train_recipe(config, settings, objective)


def default_options(teacher_dir: Path, method: Method) -> StudentOptions:
    """The student ``kubemaas compress --methods`` makes: prune half the hidden units and half the
    blocks (Taylor importance), or distil into a model with every size halved (``Architecture.halve``)."""
    teacher = load_teacher(teacher_dir)
    arch = architecture(teacher.recipe.name)
    if method == "prune":
        depth = int(teacher.params.model_dump()[arch.depth_param]) if arch.depth_param else 0
        return StudentOptions(method="prune", prune_ratio=0.5, drop_layers=depth // 2)
    assert arch.halve is not None
    return StudentOptions(method="distill", sizes=arch.halve(teacher.params))


def make_default_students(
    teacher_dir: Path, methods: list[Method], root: Path, settings: TrainingSettings | None = None
) -> dict[str, Path]:
    """One student per method with ``default_options``, written under ``root``; name -> bundle directory
    (``pruned``, ``distilled``). Single process: this runs inside the compression pod."""
    students: dict[str, Path] = {}
    for method in methods:
        path = root / SUFFIX[method]
        make_student(teacher_dir, default_options(teacher_dir, method), str(path), settings)
        students[SUFFIX[method]] = path
    return students
