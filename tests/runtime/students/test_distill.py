"""Knowledge distillation: the loss, the student's size rules, and a student that learns from the teacher."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kubemaas_runtime.bundle import MANIFEST, Bundle, load_bundle
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes.digits import DigitsRecipe
from kubemaas_runtime.training.settings import TrainingSettings
from kubemaas_runtime.training.students.architectures import architecture
from kubemaas_runtime.training.students.build import StudentOptions, default_options, make_student
from kubemaas_runtime.training.students.distill import distill_params, distillation_loss
from kubemaas_runtime.training.students.teachers import load_teacher
from tests.runtime.training.training_helpers import DIST_VARS, rank_done


def test_loss_is_cross_entropy_at_alpha_0_and_zero_for_a_perfect_copy_at_alpha_1() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(distillation_loss(logits, logits + 5.0, labels, 2.0, 0.0), ce)
    assert float(distillation_loss(logits, logits + 5.0, labels, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_soft_term_is_t_squared_times_the_kl_of_the_softened_outputs() -> None:
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[4.0, 0.0]])
    t = 2.0
    p = torch.softmax(teacher / t, dim=-1)[0].tolist()  # q = [0.5, 0.5]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    loss = distillation_loss(student, teacher, torch.tensor([0]), t, 1.0)
    assert float(loss) == pytest.approx(t * t * kl, rel=1e-5)


def test_student_may_change_only_its_size() -> None:
    recipe = DigitsRecipe()
    params = recipe.params({})
    with pytest.raises(TrainingError, match=r"--set test_fraction=0.5: not a size of recipe 'digits'"):
        distill_params(recipe, params, architecture("digits"), {"test_fraction": "0.5"})
    with pytest.raises(TrainingError, match="distillation needs the student's size: --set KEY=VALUE with KEY in hidden"):
        distill_params(recipe, params, architecture("digits"), {})
    with pytest.raises(TrainingError, match=r"--set hidden='4'"):
        distill_params(recipe, params, architecture("digits"), {"hidden": "4"})  # the recipe's own bound (>= 8)
    assert distill_params(recipe, params, architecture("digits"), {"hidden": "32"}).model_dump()["hidden"] == 32


def _scrambled_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The student's training labels become a random permutation: only the teacher knows the truth."""
    real = DigitsRecipe.data

    def data(self: DigitsRecipe, params: object) -> object:
        splits = real(self, params)  # type: ignore[arg-type]
        shuffled = np.random.default_rng(0).permutation(splits.train_y)
        return replace(splits, train_y=shuffled)

    monkeypatch.setattr(DigitsRecipe, "data", data)


def test_student_learns_from_soft_targets_alone(
    tmp_path: Path, digits_teacher: Bundle, settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alpha=1 (no label term) with scrambled labels: accuracy far above chance (0.1) can only
    come from the teacher. The control, alpha=0 on the same scrambled labels, stays near chance,
    so this test fails if the distillation term does nothing."""
    _scrambled_labels(monkeypatch)
    accuracy = {}
    for alpha in (1.0, 0.0):
        options = StudentOptions(method="distill", sizes={"hidden": "32"}, alpha=alpha, temperature=4.0, epochs=8)
        artifact = make_student(digits_teacher.path, options, str(tmp_path / f"alpha-{alpha}"), settings)
        assert artifact is not None
        accuracy[alpha] = artifact.metrics["accuracy"]
    assert accuracy[1.0] >= 0.85, accuracy
    assert accuracy[0.0] <= 0.3, accuracy


def test_distilled_student_bundle_records_its_lineage(
    tmp_path: Path, sequence_teacher: Bundle, settings: TrainingSettings
) -> None:
    options = StudentOptions(method="distill", sizes={"d_model": "16", "layers": "1", "ff": "32"})
    make_student(sequence_teacher.path, options, str(tmp_path / "student"), settings)
    student = load_bundle(tmp_path / "student")
    source = json.loads((student.path / MANIFEST).read_text())["source"]
    assert source["hyperparameters"] == {**source["student"]["teacher"]["hyperparameters"],
                                         "d_model": 16, "layers": 1, "ff": 32}
    assert source["student"]["method"] == "distill"
    assert source["student"]["parameters"] < source["student"]["teacher"]["parameters"] / 4
    assert student.manifest.inputs == sequence_teacher.manifest.inputs
    assert student.manifest.outputs == sequence_teacher.manifest.outputs
    teacher_accuracy = sequence_teacher.manifest.metrics["accuracy"]
    assert student.manifest.metrics["accuracy"] >= min(0.8, teacher_accuracy - 0.1)
    assert load_teacher(student.path).params.model_dump()["d_model"] == 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_distillation_runs_on_two_ranks_like_any_training_job(tmp_path: Path, digits_teacher: Bundle) -> None:
    """``kubemaas students`` under the env contract: two gloo ranks end with identical weights."""
    port = str(_free_port())
    base = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    procs = []
    for rank in range(2):
        env = {**base, "WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "KUBEMAAS_THREADS": "1", "KUBEMAAS_BACKEND": "gloo",
               "KUBEMAAS_TERMINATION_LOG": str(tmp_path / f"term-{rank}")}
        log = (tmp_path / f"rank-{rank}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kubemaas_runtime.cli", "students", "--bundle", str(digits_teacher.path),
             "--output", str(tmp_path / "student"), "--method", "distill", "--set", "hidden=32", "--epochs", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], (tmp_path / "rank-0.log").read_text()[-3000:]
    assert rank_done(tmp_path, 0)["paramsSha256"] == rank_done(tmp_path, 1)["paramsSha256"]
    assert rank_done(tmp_path, 0)["worldSize"] == 2
    assert load_bundle(tmp_path / "student").manifest.metrics["accuracy"] > 0.5
    assert json.loads((tmp_path / "term-0").read_text())["artifact"]["uri"] == str(tmp_path / "student")


def test_default_students_halve_every_size(sequence_teacher: Bundle, digits_teacher: Bundle) -> None:
    """What ``kubemaas compress --methods prune,distill`` makes when given no student options."""
    assert default_options(sequence_teacher.path, "distill").sizes == {"d_model": "16", "layers": "1", "ff": "32"}
    assert default_options(digits_teacher.path, "distill").sizes == {"hidden": "128"}
    pruned = default_options(sequence_teacher.path, "prune")
    assert (pruned.prune_ratio, pruned.drop_layers) == (0.5, 1)
    assert default_options(digits_teacher.path, "prune").drop_layers == 0
