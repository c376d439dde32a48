"""``kubemaas train --module pkg.mod:fn``: user code on 2 real ranks using the same helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kubemaas_runtime.bundle import load_bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.training.launch import run_local

USER_CODE = '''
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kubemaas_runtime.training import init_distributed, save_bundle


def main(config):
    info = init_distributed()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    train_x, train_y, test_x, test_y = x[:1400], y[:1400], x[1400:], y[1400:]
    torch.manual_seed(config.seed)
    model = nn.Linear(64, 10)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    shard_x = torch.from_numpy(train_x[info.rank::info.world_size])
    shard_y = torch.from_numpy(train_y[info.rank::info.world_size])
    for _ in range(config.epochs or 30):
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(shard_x), shard_y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    save_bundle(
        model, torch.from_numpy(test_x[:2]), (test_x, test_y), {"accuracy": accuracy},
        output=config.output, name=config.name or "user-linear", labels=[str(d) for d in range(10)],
    )


def forgetful(config):
    init_distributed()
'''


def _write_module(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "usertrain.py").write_text(textwrap.dedent(USER_CODE))
    return directory


@pytest.mark.slow
def test_user_module_on_two_ranks_writes_a_bundle(tmp_path: Path) -> None:
    code = _write_module(tmp_path / "code")
    out = tmp_path / "out"
    done = run_local(
        2, ["--module", "usertrain:main", "--output", str(out), "--name", "mine"],
        env={"PYTHONPATH": str(code)}, log_dir=tmp_path / "logs", threads_per_rank=1,
    )
    bundle = load_bundle(out)
    assert bundle.digest == done["artifact"]["sha256"]
    assert bundle.manifest.name == "mine"
    assert bundle.manifest.inputs[0].shape == [-1, 64]
    assert bundle.manifest.metrics["accuracy"] == done["artifact"]["metrics"]["accuracy"] > 0.85


def test_user_module_that_never_saves_fails_clearly(
    single_process: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(_write_module(tmp_path / "code")))
    assert main(["train", "--module", "usertrain:forgetful", "--output", str(tmp_path / "o")]) == 1
    assert "--module 'usertrain:forgetful' returned on rank 0 without calling save_bundle()" in capsys.readouterr().err


def test_user_module_that_does_not_exist(single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--module", "no_such_pkg.mod:fn", "--output", str(tmp_path / "o")]) == 1
    assert "--module 'no_such_pkg.mod:fn': cannot import 'no_such_pkg.mod'" in capsys.readouterr().err
