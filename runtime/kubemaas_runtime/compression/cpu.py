"""What this CPU offers int8 kernels.

ONNX Runtime's x86 u8s8 GEMM uses VPMADDUBSW on CPUs without VNNI; it adds pairs of
u8*s8 products in int16 and can saturate. ORT's documentation recommends ``reduce_range``
(7-bit weights) there, and on this project's AVX2 machines it turns the encoder's
argmax agreement with fp32 from ~0.5 into 1.0 at the same speed (measured by
bench/compression.py).
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8"})


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & VNNI_FLAGS)


def needs_reduce_range(flags: frozenset[str] | None = None) -> bool:
    """x86 without VNNI: use 7-bit weights so u8s8 products cannot saturate int16."""
    flags = cpu_flags() if flags is None else flags
    x86 = "sse2" in flags
    return x86 and not has_vnni(flags)
