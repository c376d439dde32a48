"""Rank 0's termination message where a pod has it: a writable file in a directory the
trainer's non-root user cannot write (the kubelet mounts /dev/termination-log, mode 0666,
into a root-owned /dev). Found by `make e2e`: the message was never written in real pods."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from kubemaas_runtime.compression.report import write_termination
from kubemaas_runtime.training.progress import write_termination_message

NOBODY = 65534


WRITERS = {"training": write_termination_message, "compression": write_termination}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the writer as another uid")
@pytest.mark.parametrize("stage", sorted(WRITERS))
def test_a_writable_file_in_a_read_only_directory_gets_the_message(stage: str) -> None:
    # pytest's tmp_path sits below a 0700 directory that uid 65534 cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="kubemaas-termlog-"))
    root.chmod(0o755)
    dev = root / "dev"
    dev.mkdir(mode=0o755)  # owned by root: uid 65534 cannot create files here
    log = dev / "termination-log"
    log.touch()
    log.chmod(0o666)
    pid = os.fork()
    if pid == 0:  # the child drops to uid 65534, as the trainer runs non-root in its pod
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(0 if WRITERS[stage](log, {"artifact": {"uri": "pvc://m/x"}}) else 3)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the writer reported that it could not write"
    try:
        assert json.loads(log.read_text()) == {"artifact": {"uri": "pvc://m/x"}}
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("stage", sorted(WRITERS))
def test_no_file_and_no_directory_writes_nothing(tmp_path: Path, stage: str) -> None:
    assert WRITERS[stage](tmp_path / "missing" / "termination-log", {"error": "x"}) is False
