"""reduce_range follows the CPU: on x86 without VNNI, u8s8 products can saturate int16."""

from __future__ import annotations

from pathlib import Path

from kubemaas_runtime.compression.cpu import cpu_flags, needs_reduce_range


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t: other\n")
    assert cpu_flags(info) == frozenset({"fpu", "sse2", "avx2", "avx512f"})


def test_missing_cpuinfo_gives_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_reduce_range_only_on_x86_without_vnni() -> None:
    assert needs_reduce_range(frozenset({"sse2", "avx2", "avx512f"})) is True
    assert needs_reduce_range(frozenset({"sse2", "avx2", "avx512f", "avx512_vnni"})) is False
    assert needs_reduce_range(frozenset({"sse2", "avx_vnni"})) is False
    assert needs_reduce_range(frozenset({"asimd", "asimddp"})) is False  # arm64: no x86 kernels
