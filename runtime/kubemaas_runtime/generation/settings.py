"""Settings of a text-generation server: the tensor server's (auth, limits, drain, threads) plus the scheduler's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubemaas_runtime.serving.settings import ServingSettings


class GenerationSettings(ServingSettings):
    """``KUBEMAAS_*`` environment; ``max_batch_size`` is the most sequences decoded together (KV slots).

    At startup the KV cache those slots take (``generation.memory``) is checked against the memory the
    container has; a cache that does not fit stops the server with a message naming ``max_batch_size``."""

    max_waiting: int = Field(default=64, ge=0)
    """Sequences waiting for a slot before new requests get 503 with Retry-After."""
    max_model_len: int = Field(default=4096, ge=2)
    """Longest sequence (prompt + output) served, capped by the model's context length; sizes the KV
    buffer (``2 * layers * max_batch_size * kv_heads * max_model_len * head_size`` floats)."""
    default_max_tokens: int = Field(default=256, ge=1)
    """max_tokens when a request gives none (capped by what the context leaves after the prompt)."""
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    """ONNX Runtime execution provider: auto uses CUDA when a GPU is visible and the CUDA provider installed."""
    switch_interval_s: float = Field(default=0.005, gt=0.0)
    """``sys.setswitchinterval`` while serving: how soon the decode thread and the event loop hand over the
    GIL. bench/generation.py measured 0.5 ms against Python's default 5 ms: 5 ms gave more tokens/s at c=32."""
