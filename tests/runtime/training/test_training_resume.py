"""Kill a rank mid-run; the rerun (as the gang restart would) resumes from the checkpoint epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kubemaas_runtime.bundle import CHECKPOINT, MANIFEST
from kubemaas_runtime.training.launch import LaunchError, run_local, start_local


def _checkpoint_epoch(out: Path) -> int | None:
    try:
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None
    return int(state["epoch"])


@pytest.mark.slow
def test_killed_rank_then_rerun_resumes_from_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--recipe", "digits", "--output", str(out), "--epochs", "30"]
    gang = start_local(2, argv, log_dir=tmp_path / "first", threads_per_rank=1)
    try:
        deadline = time.monotonic() + 240
        while _checkpoint_epoch(out) is None:
            assert gang.poll_failed() is None, "a rank failed before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint.pt within 240 s"
            time.sleep(0.05)
        gang.kill(1)
        with pytest.raises(LaunchError, match=r"rank [01] exited with code"):
            gang.wait(timeout_s=120)
    finally:
        gang.stop()
    assert not (out / MANIFEST).exists(), "the first run finished before the kill; the test proves nothing"
    saved = _checkpoint_epoch(out)
    assert saved is not None
    assert 1 <= saved < 30

    events: list[dict[str, Any]] = []
    done = run_local(2, argv, on_event=events.append, log_dir=tmp_path / "second", threads_per_rank=1)
    assert events[0] == {"event": "resume", "epoch": saved, "step": saved * 22, "uri": str(out)}
    progress = [e["epoch"] for e in events if e["event"] == "progress"]
    assert progress == list(range(saved + 1, 31))
    assert done["artifact"]["metrics"]["epochs"] == 30.0
