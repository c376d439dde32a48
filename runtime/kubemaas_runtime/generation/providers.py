"""Choose ONNX Runtime's execution provider for a text-generation server.

``auto`` picks CUDA when ONNX Runtime has the CUDA provider (the CUDA build of the packages, the
``generate-cuda`` extra or the GPU image) and the container sees a GPU (``CUDA_VISIBLE_DEVICES``
and ``NVIDIA_VISIBLE_DEVICES`` as the NVIDIA container runtime sets them); CPU otherwise. Asking
for ``cuda`` where it cannot work is an error, not a silent fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def gpu_visible(env: Mapping[str, str]) -> bool:
    """False when the environment hides every GPU (empty, ``-1``, ``none``, ``void``); True otherwise."""
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = env.get(name)
        if value is not None and value.strip().lower() in ("", "-1", "none", "void"):
            return False
    return True


def choose_providers(
    requested: Literal["auto", "cpu", "cuda"], available: Sequence[str], env: Mapping[str, str], device_node: bool
) -> list[str]:
    """Providers for ``InferenceSession`` in priority order; ValueError names why CUDA cannot be used.

    ``available`` is ``onnxruntime.get_available_providers()``; ``device_node`` whether
    ``/dev/nvidiactl`` exists (a GPU is mounted into the container).
    """
    if requested == "cpu":
        return [CPU]
    has_cuda = CUDA in available
    if requested == "cuda":
        if not has_cuda:
            raise ValueError(
                f"provider=cuda: ONNX Runtime offers {list(available)}; install the CUDA build (extra generate-cuda)"
            )
        if not (device_node and gpu_visible(env)):
            raise ValueError("provider=cuda: no GPU is visible (no /dev/nvidiactl, or CUDA_VISIBLE_DEVICES/NVIDIA_VISIBLE_DEVICES hide all)")
        return [CUDA, CPU]
    return [CUDA, CPU] if has_cuda and device_node and gpu_visible(env) else [CPU]
