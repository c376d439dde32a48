"""Run N ranks of ``kubemaas train`` as local subprocesses on loopback (the demo, tests, bench).

It sets the env contract (MASTER_ADDR=127.0.0.1, a free MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK), gives each rank one torch thread unless told otherwise (bench/training.py measured
1 rank x 2 threads about 60x slower than 1 x 1 on this shared 2-core box: OpenMP threads spin
when cores are contended), streams rank 0's JSON progress lines
to a callback, and behaves like the operator's gang: when one rank fails, the others are
stopped and the error carries the failing rank's log tail. Imports no torch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kubemaas_runtime

ProgressCallback = Callable[[dict[str, Any]], None]


class LaunchError(RuntimeError):
    """A rank failed or the run timed out; the message carries that rank's log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RankProcess:
    rank: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class LocalGang:
    """Ranks started by ``start_local``; ``wait`` supervises them like a gang."""

    ranks: list[RankProcess]
    log_dir: Path
    port: int
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def poll_failed(self) -> RankProcess | None:
        for r in self.ranks:
            code = r.proc.poll()
            if code is not None and code != 0:
                return r
        return None

    def kill(self, rank: int, sig: int = signal.SIGKILL) -> None:
        self.ranks[rank].proc.send_signal(sig)

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate every rank still running (SIGTERM, then SIGKILL after ``grace_s``)."""
        for r in self.ranks:
            if r.proc.poll() is None:
                r.proc.terminate()
        deadline = time.monotonic() + grace_s
        for r in self.ranks:
            try:
                r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=grace_s)

    def wait(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait for every rank; return rank 0's ``done`` event, or stop the gang and raise."""
        deadline = time.monotonic() + timeout_s
        while True:
            failed = self.poll_failed()
            if failed is not None:
                self.stop()
                raise LaunchError(
                    f"rank {failed.rank} exited with code {failed.proc.returncode}; "
                    f"last lines of {failed.log}:\n{tail(failed.log)}"
                )
            if all(r.proc.poll() == 0 for r in self.ranks):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise LaunchError(f"ranks still running after {timeout_s:g}s; rank 0 log:\n{tail(self.ranks[0].log)}")
            time.sleep(0.05)
        if self._reader is not None:
            self._reader.join()
        done = [e for e in self.events if e.get("event") == "done"]
        if not done:
            raise LaunchError(f"rank 0 exited 0 without a done event; last lines:\n{tail(self.ranks[0].log)}")
        return done[-1]


def _pythonpath(extra: str | None) -> str:
    runtime_dir = str(Path(kubemaas_runtime.__file__).resolve().parents[1])
    parts = [runtime_dir, *(extra.split(os.pathsep) if extra else [])]
    return os.pathsep.join(p for p in parts if p)


def start_local(
    world_size: int,
    argv: Sequence[str],
    *,
    on_event: ProgressCallback | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    threads_per_rank: int | None = None,
) -> LocalGang:
    """Start ``world_size`` processes of ``kubemaas train <argv>``; return at once."""
    if world_size < 1:
        raise ValueError(f"world_size {world_size} must be >= 1")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="kubemaas-ranks-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    threads = threads_per_rank or 1
    base = dict(os.environ)
    base.update(env or {})
    base.setdefault("KUBEMAAS_BACKEND", "gloo")
    base.setdefault("KUBEMAAS_THREADS", str(threads))
    base.setdefault("KUBEMAAS_MASTER_WAIT_S", "60")
    base["PYTHONPATH"] = _pythonpath(base.get("PYTHONPATH"))
    base["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "kubemaas_runtime.cli", "train", *argv]
    ranks: list[RankProcess] = []
    gang = LocalGang(ranks=ranks, log_dir=log_dir, port=port)
    for rank in range(world_size):
        rank_env = {
            **base,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": str(threads),
            "KUBEMAAS_TERMINATION_LOG": str(log_dir / f"termination-{rank}.json"),
        }
        log = log_dir / f"rank-{rank}.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                env=rank_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if rank == 0 else log_file,
                stderr=log_file,
            )
        ranks.append(RankProcess(rank, proc, log))
        if rank == 0:
            assert proc.stdout is not None
            gang._reader = threading.Thread(
                target=_read_events, args=(proc.stdout, log_dir / "rank-0.stdout", gang.events, on_event), daemon=True
            )
            gang._reader.start()
    return gang


def _read_events(
    stream: IO[bytes], copy: Path, events: list[dict[str, Any]], on_event: ProgressCallback | None
) -> None:
    with copy.open("wb") as out:
        for raw in stream:
            out.write(raw)
            out.flush()
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                events.append(event)
                if on_event is not None:
                    on_event(event)


def run_local(
    world_size: int,
    argv: Sequence[str],
    *,
    on_event: ProgressCallback | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    threads_per_rank: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run ``kubemaas train <argv>`` on ``world_size`` local ranks; return rank 0's ``done`` event.

    Example: ``run_local(2, ["--recipe", "digits", "--output", "/tmp/digits"], on_event=print)``.
    """
    gang = start_local(world_size, argv, on_event=on_event, env=env, log_dir=log_dir, threads_per_rank=threads_per_rank)
    try:
        return gang.wait(timeout_s)
    finally:
        gang.stop()
