"""``KUBEMAAS_MAX_BATCH_SIZE`` is checked against the memory its KV cache takes: the server accepted
any value and failed later (numpy's MemoryError traceback, or lazily zeroed pages that start fine and
are OOM-killed under traffic). The cgroup readings run on files laid out as the kernel writes them."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from kubemaas_runtime.generation.folder import read_genai_config
from kubemaas_runtime.generation.memory import Available, available_memory, cgroup_headroom, mem_available


def at_most_8_gib() -> None:
    """Cap the server's address space: where memory is overcommitted (vm.overcommit_memory=1) the
    unchecked cache allocated lazily and then took the whole machine's memory as warm-up touched it."""
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


@pytest.mark.parametrize(("slots", "max_model_len"), [(100_000_000, None), (3_000_000, 64)])
def test_a_batch_size_whose_kv_cache_cannot_fit_stops_the_server_naming_it(
        tiny_bundle: Path, slots: int, max_model_len: int | None) -> None:
    shape = read_genai_config(tiny_bundle)
    positions = min(shape.context_length, max_model_len or 4096)
    slot = positions * shape.layers * 2 * shape.kv_heads * shape.head_size * 4  # float32 keys and values
    env = {**os.environ, "KUBEMAAS_MAX_BATCH_SIZE": str(slots), "KUBEMAAS_PORT": "0"}
    if max_model_len:
        env["KUBEMAAS_MAX_MODEL_LEN"] = str(max_model_len)
    done = subprocess.run([sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(tiny_bundle)],
                          env=env, capture_output=True, text=True, timeout=120, check=False, preexec_fn=at_most_8_gib)
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("kubemaas serve: ")]
    available = available_memory()
    assert available is not None
    assert slots * slot > available.bytes  # the case under test
    assert line.startswith(f"kubemaas serve: KUBEMAAS_MAX_BATCH_SIZE (max_batch_size) {slots}: "
                           f"the KV cache needs {slots * slot} bytes")
    assert f"{slots} slots x {positions} positions x {shape.layers} layers x 2 (key, value) x " in line
    assert "MemAvailable" in line  # this machine sets no cgroup limit
    fits = int(line.split("; at most ")[1].split(" slots fit")[0])
    assert fits * slot <= available.bytes * 1.1  # the box's free memory moves a little between readings


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_headroom_is_the_tightest_limit_less_its_working_set(tmp_path: Path) -> None:
    root = write(tmp_path / "cg", {
        "kubepods/pod1/memory.max": "8589934592\n", "kubepods/pod1/memory.current": "1073741824\n",
        "kubepods/pod1/memory.stat": "anon 1\ninactive_file 268435456\n",
        "kubepods/pod1/ctr/memory.max": "max\n", "kubepods/pod1/ctr/memory.current": "536870912\n",
        "kubepods/memory.max": "2147483648\n", "kubepods/memory.current": "1610612736\n",
        "kubepods/memory.stat": "inactive_file 536870912\n",
    })
    proc = write(tmp_path, {"self-cgroup": "0::/kubepods/pod1/ctr\n"}) / "self-cgroup"
    room = cgroup_headroom(root, proc)
    assert room is not None
    assert room.bytes == 2147483648 - (1610612736 - 536870912)  # kubepods: 1 GiB left, pod1 would leave 7.25
    assert str(root / "kubepods" / "memory.max") in room.source


def test_cgroup_v1_headroom_and_no_limit(tmp_path: Path) -> None:
    memory = tmp_path / "cg" / "memory"
    proc = write(tmp_path, {"self-cgroup": "4:memory:/kubepods/pod1\n0::/\n"}) / "self-cgroup"
    write(memory, {"memory.limit_in_bytes": "9223372036854771712\n", "memory.stat": "total_inactive_file 0\n"})
    assert cgroup_headroom(tmp_path / "cg", proc) is None
    write(memory, {  # inside a container the mount is the container's own cgroup
        "memory.limit_in_bytes": "4294967296\n", "memory.usage_in_bytes": "3221225472\n",
        "memory.stat": "hierarchical_memory_limit 4294967296\ntotal_inactive_file 1073741824\n",
    })
    assert cgroup_headroom(tmp_path / "cg", proc) == Available(
        4294967296 - (3221225472 - 1073741824), f"cgroup {memory / 'memory.limit_in_bytes'} 4294967296 minus a "
        "working set of 2147483648")


def test_available_memory_is_the_smaller_of_cgroup_and_node(tmp_path: Path) -> None:
    meminfo = write(tmp_path, {"meminfo": "MemTotal:  16384000 kB\nMemAvailable:     1000 kB\n"}) / "meminfo"
    assert mem_available(meminfo) == Available(1024000, f"{meminfo} MemAvailable 1000 kB")
    root = write(tmp_path / "cg", {"memory.max": "2147483648\n", "memory.current": "0\n"})
    proc = write(tmp_path, {"self-cgroup": "0::/\n"}) / "self-cgroup"
    assert available_memory(root, proc, meminfo) == mem_available(meminfo)
    plenty = write(tmp_path, {"plenty": "MemAvailable: 99999999 kB\n"}) / "plenty"
    assert available_memory(root, proc, plenty) == cgroup_headroom(root, proc)
    assert available_memory(tmp_path / "none", proc, tmp_path / "none") is None
