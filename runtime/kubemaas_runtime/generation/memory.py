"""The KV cache's memory: what ``max_batch_size`` slots need and what the container has.

The decoder keeps one key and one value buffer per layer, ``[slots, kv_heads, positions,
head_size]`` each (``engine.Decoder``), allocated whole at startup, so
``slots x positions x layers x 2 x kv_heads x head_size x dtype bytes`` must fit before the
server starts; numpy's lazy zero pages would otherwise let an oversized cache start and be
OOM-killed mid-traffic. What a container can still take is the smaller of its cgroup's headroom
(the limit minus the working set, usage less inactive file pages, as the kubelet counts it for
eviction) and the node's ``MemAvailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 62
"""cgroup v1 reports no limit as a page-rounded 2**63 - 1; anything this large means none."""


@dataclass(frozen=True)
class KVCacheSize:
    """The shape of a slot KV cache; ``bytes`` is its size."""

    slots: int
    positions: int
    layers: int
    kv_heads: int
    head_size: int
    dtype_bytes: int

    @property
    def slot_bytes(self) -> int:
        """One slot: keys and values of every layer at every position."""
        return self.positions * self.layers * 2 * self.kv_heads * self.head_size * self.dtype_bytes

    @property
    def bytes(self) -> int:
        return self.slots * self.slot_bytes

    def formula(self) -> str:
        """``8 slots x 1024 positions x 2 layers x 2 (key, value) x 2 KV heads x 16 head size x 4 bytes``."""
        return (f"{self.slots} slots x {self.positions} positions x {self.layers} layers x 2 (key, value) x "
                f"{self.kv_heads} KV heads x {self.head_size} head size x {self.dtype_bytes} bytes")


@dataclass(frozen=True)
class Available:
    """Bytes the process can still allocate, and where the number comes from (for messages)."""

    bytes: int
    source: str


class KVCacheTooLarge(ValueError):
    """The KV cache of ``size`` does not fit in ``available``."""

    def __init__(self, size: KVCacheSize, available: Available) -> None:
        self.size = size
        self.available = available
        super().__init__(f"a KV cache of {size.formula()} = {size.bytes} bytes does not fit in the "
                         f"{available.bytes} bytes available ({available.source})")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _own_dirs(mount: Path, controller: str, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup folder under ``mount`` (then ``mount`` itself: in a container the mount
    is usually the container's own cgroup, while /proc/self/cgroup shows the host's path)."""
    dirs = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == controller or controller in controllers.split(","):
                dirs.append(mount / path.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [d for d in (*dirs, mount) if d.is_dir()]


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> Available | None:
    """Limit minus working set of this process's memory cgroup (v2, or v1 under ``root/memory``),
    the tightest level up to the mount for v2; None when no level sets a limit."""
    best: Available | None = None
    own = _own_dirs(root, "", proc_cgroup)  # v2: the "0::<path>" line
    if own and (own[0] / "memory.max").exists():
        level: Path | None = own[0]
        while level is not None:
            limit = _read_int(level / "memory.max")
            if limit is not None:
                used = (_read_int(level / "memory.current") or 0) - _stat(level / "memory.stat", "inactive_file")
                room = Available(max(0, limit - max(0, used)),
                                 f"cgroup {level / 'memory.max'} {limit} minus a working set of {max(0, used)}")
                best = room if best is None or room.bytes < best.bytes else best
            level = level.parent if level != root and level.parent.is_relative_to(root) else None
        return best
    for level in _own_dirs(root / "memory", "memory", proc_cgroup):
        limit = _read_int(level / "memory.limit_in_bytes")
        if limit is None:
            continue
        stat = level / "memory.stat"
        limit = min(limit, _stat(stat, "hierarchical_memory_limit") or limit)
        if limit >= UNLIMITED:
            return None
        used = (_read_int(level / "memory.usage_in_bytes") or 0) - _stat(stat, "total_inactive_file")
        return Available(max(0, limit - max(0, used)),
                         f"cgroup {level / 'memory.limit_in_bytes'} {limit} minus a working set of {max(0, used)}")
    return None


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> Available | None:
    """The kernel's estimate of memory available without swapping (``MemAvailable``), in bytes."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # "MemAvailable:   23182532 kB"
        name, *value = line.split()
        if name == "MemAvailable:" and value and value[0].isdigit():
            return Available(int(value[0]) * 1024, f"{meminfo} MemAvailable {value[0]} kB")
    return None


def available_memory(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup"),
                     meminfo: Path = Path("/proc/meminfo")) -> Available | None:
    """The smaller of ``cgroup_headroom`` and ``mem_available``; None when neither can be read."""
    found = [a for a in (cgroup_headroom(root, proc_cgroup), mem_available(meminfo)) if a is not None]
    return min(found, key=lambda a: a.bytes) if found else None
