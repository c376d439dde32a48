"""``init_distributed()``: a process group from the env contract, with a bounded wait for the master.

Env contract (Kubeflow PyTorchJob style, both forms):

* ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` (``LOCAL_RANK`` optional), or
* torchrun's ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``, ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
  ``PET_NODE_RANK`` with ``LOCAL_RANK``.

No ``WORLD_SIZE`` (and no ``PET_NNODES``) means one process: no process group at all.

Rank 0 hosts the rendezvous store, so only ranks > 0 wait for ``MASTER_ADDR:MASTER_PORT`` to
accept TCP connections, retrying (DNS names of pods appear late, the master starts late)
until ``KUBEMAAS_MASTER_WAIT_S`` and then failing with a message naming ``host:port``.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from kubemaas_runtime.training.errors import MasterUnreachableError, TrainingError
from kubemaas_runtime.training.settings import TrainingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int:
    for name in names:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            return int(raw)
        except ValueError:
            raise TrainingError(f"env {name}={raw!r} is not an integer") from None
    if default is None:
        raise TrainingError(f"env {' or '.join(names)} is not set")
    return default


def read_rank_env(env: Mapping[str, str] | None = None) -> RankEnv:
    """Read the rank layout from the env contract; validate it with messages naming the variable."""
    env = os.environ if env is None else env
    local_rank = _int(env, "LOCAL_RANK", default=0)
    if env.get("WORLD_SIZE"):
        world = _int(env, "WORLD_SIZE")
        rank = _int(env, "RANK", default=0)
    elif env.get("PET_NNODES"):
        nnodes_raw = env["PET_NNODES"]
        try:  # elastic "min:max" form: a fixed-size gang runs at max
            nnodes = int(nnodes_raw.split(":")[-1])
        except ValueError:
            raise TrainingError(f"env PET_NNODES={nnodes_raw!r} is not an integer or MIN:MAX") from None
        nproc = _int(env, "PET_NPROC_PER_NODE", default=1)
        world = nnodes * nproc
        rank = _int(env, "PET_NODE_RANK", default=0) * nproc + local_rank
    else:
        world, rank = 1, 0
    if world < 1:
        raise TrainingError(f"env WORLD_SIZE={world} must be >= 1")
    if not 0 <= rank < world:
        raise TrainingError(f"env RANK={rank} is outside [0, WORLD_SIZE={world})")
    addr = env.get("MASTER_ADDR") or env.get("PET_MASTER_ADDR") or ""
    port = _int(env, "MASTER_PORT", "PET_MASTER_PORT", default=23456)
    if world > 1 and not addr:
        raise TrainingError(f"env MASTER_ADDR (or PET_MASTER_ADDR) is not set but WORLD_SIZE={world}")
    if not 0 < port < 65536:
        raise TrainingError(f"env MASTER_PORT={port} is not a TCP port")
    return RankEnv(rank=rank, world_size=world, local_rank=local_rank, master_addr=addr, master_port=port)


def wait_for_master(host: str, port: int, wait_s: float, poll_s: float = 0.5) -> None:
    """Retry a TCP connect to ``host:port`` until it succeeds or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    delay = poll_s
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, remaining))):
                log.info("master %s:%d reachable after %d attempt(s)", host, port, attempts)
                return
        except OSError as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MasterUnreachableError(
                f"master {host}:{port} not reachable after {wait_s:g}s ({attempts} attempts; last error: "
                f"{last.strerror or last}); is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


def pick_backend(settings: TrainingSettings) -> str:
    if settings.backend != "auto":
        return settings.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(settings: TrainingSettings | None = None) -> DistInfo:
    """Join the process group described by the env contract (idempotent); world size 1 joins none."""
    settings = settings or TrainingSettings()
    layout = read_rank_env()
    backend = pick_backend(settings)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise TrainingError("KUBEMAAS_BACKEND=nccl but CUDA is not available; use gloo")
        torch.cuda.set_device(layout.local_rank)
        device = torch.device("cuda", layout.local_rank)
    else:
        device = torch.device("cpu")
    info = DistInfo(layout.rank, layout.world_size, layout.local_rank, backend, device)
    if layout.world_size == 1 or dist.is_initialized():
        return info
    if layout.rank > 0:
        wait_for_master(layout.master_addr, layout.master_port, settings.master_wait_s, settings.master_poll_s)
    host = f"[{layout.master_addr}]" if ":" in layout.master_addr else layout.master_addr
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{host}:{layout.master_port}",
        world_size=layout.world_size,
        rank=layout.rank,
        timeout=timedelta(seconds=settings.pg_timeout_s),
    )
    log.info("rank %d/%d joined %s via %s:%d", layout.rank, layout.world_size, backend, host, layout.master_port)
    return info


def current() -> DistInfo:
    """The rank layout without joining anything (for helpers called after ``init_distributed``)."""
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    backend = str(dist.get_backend()) if dist.is_initialized() else "none"
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistInfo(rank, world, int(os.environ.get("LOCAL_RANK", "0") or 0), backend, device)


def broadcast_bytes(data: bytes | None, info: DistInfo) -> bytes | None:
    """Rank 0's ``data`` on every rank, sent as a uint8 tensor (no pickling between ranks)."""
    if not info.distributed:
        return data
    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=info.device)
    dist.broadcast(size, src=0)
    n = int(size.item())
    if n < 0:
        return None
    if info.is_primary and data is not None:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(info.device)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=info.device)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().numpy().tobytes()) if not info.is_primary else data


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def load_bytes(data: bytes) -> dict[str, object]:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``)."""
    loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise TrainingError(f"checkpoint holds a {type(loaded).__name__}, expected a dict of state dicts")
    return loaded


def shutdown() -> None:
    """Leave the process group together with every other rank, then destroy it.

    Ranks other than 0 finish training before rank 0 has exported and uploaded the bundle;
    one that tore its gloo pairs down alone sometimes aborted the process ("terminate called
    without an active exception", about 1 run in 5 on 2 cores), as PyTorch warns when ranks
    call ``destroy_process_group`` at different times. A final barrier lines them up; when a
    peer is already gone the barrier fails, and the group is left to the process exit.
    """
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError as exc:  # a peer exited first (it failed, or was stopped): nothing to line up with
        logging.getLogger(__name__).warning("final barrier failed (%s); not destroying the process group", exc)
        return
    dist.destroy_process_group()
