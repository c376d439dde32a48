"""The env contract and the bounded wait for the master's TCP port (real sockets, real processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubemaas_runtime.training.distributed import read_rank_env, wait_for_master
from kubemaas_runtime.training.errors import MasterUnreachableError, TrainingError
from kubemaas_runtime.training.launch import free_port
from tests.runtime.training.training_helpers import DIST_VARS


@pytest.mark.slow
def test_rank1_fails_with_a_message_naming_the_master(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK="1",
        KUBEMAAS_MASTER_WAIT_S="1.5", KUBEMAAS_MASTER_POLL_S="0.1",
        KUBEMAAS_TERMINATION_LOG=str(tmp_path / "termination-log"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "train", "--recipe", "digits", "--output", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 1
    assert f"kubemaas train: master 127.0.0.1:{port} not reachable after 1.5s" in proc.stderr
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["error"].startswith(f"master 127.0.0.1:{port} not reachable")


def test_wait_succeeds_once_the_master_starts_listening() -> None:
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def start_late() -> None:
        time.sleep(0.5)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        began = time.monotonic()
        wait_for_master("127.0.0.1", port, wait_s=30, poll_s=0.05)
        assert time.monotonic() - began < 30
    finally:
        thread.join()
        listener.close()


def test_unresolvable_master_names_host_and_port() -> None:
    with pytest.raises(MasterUnreachableError, match=r"master rank0\.invalid:23456 not reachable after 0\.2s"):
        wait_for_master("rank0.invalid", 23456, wait_s=0.2, poll_s=0.05)


def test_plain_env_contract() -> None:
    env = read_rank_env({"MASTER_ADDR": "job-0.job", "MASTER_PORT": "23456", "WORLD_SIZE": "4", "RANK": "3"})
    assert (env.rank, env.world_size, env.master_addr, env.master_port) == (3, 4, "job-0.job", 23456)


def test_torchrun_pet_env_contract() -> None:
    env = read_rank_env({
        "PET_MASTER_ADDR": "job-0.job", "PET_MASTER_PORT": "29500", "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "1", "LOCAL_RANK": "1",
    })
    assert (env.rank, env.world_size, env.local_rank, env.master_port) == (2 + 1, 2 * 2, 1, 29500)


def test_no_world_size_means_one_process() -> None:
    env = read_rank_env({})
    assert (env.rank, env.world_size) == (0, 1)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WORLD_SIZE": "two", "MASTER_ADDR": "m"}, "env WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "m"}, r"env RANK=2 is outside \[0, WORLD_SIZE=2\)"),
        ({"WORLD_SIZE": "2", "RANK": "1"}, "env MASTER_ADDR .* is not set but WORLD_SIZE=2"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "m", "MASTER_PORT": "70000"}, "env MASTER_PORT=70000 is not a TCP port"),
    ],
)
def test_bad_env_names_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(TrainingError, match=problem):
        read_rank_env(env)
