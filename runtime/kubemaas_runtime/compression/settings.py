"""Settings of ``kubemaas compress``: one pydantic-settings object, CLI flags override env."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubemaas_runtime.contracts import COMPRESSION_MODES, CompressionMode

Mode = CompressionMode
"""The modes of ``kubemaas compress`` are the ModelService's ``spec.compression.mode`` (one contract)."""
MODES: tuple[Mode, ...] = COMPRESSION_MODES


class CompressSettings(BaseSettings):
    """How variants are built and measured. Env prefix ``KUBEMAAS_``."""

    model_config = SettingsConfigDict(env_prefix="KUBEMAAS_", extra="ignore")

    mode: Mode = "auto"
    """Which variant to ship: ``auto`` = fastest at batch 32 within the gate; a name = that one; ``none`` = fp32."""
    max_accuracy_drop: float = Field(default=0.01, ge=0.0)
    """The gate: largest allowed drop vs fp32 (top-1 fraction for classification, RMSE increase for regression)."""
    intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime intra-op threads while measuring latency (the serving default, contract 1)."""
    inter_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime inter-op threads while measuring latency (the serving default, contract 1)."""
    latency_runs: int = Field(default=20, ge=1)
    """Timed runs per variant and batch size; runs of all variants are interleaved round by round."""
    warmup_runs: int = Field(default=3, ge=0)
    """Untimed runs per variant and batch size before timing."""
    calibration_rows: int = Field(default=128, ge=1)
    """Rows of eval.npz (a fixed-seed sample) used to calibrate int8-static activation ranges."""
    reduce_range: bool | None = None
    """7-bit int8 weights; None = decide from the CPU (on when it lacks VNNI, where u8s8 saturates)."""
    termination_log: Path = Path("/dev/termination-log")
    """Where the pod's termination message (contract 3) goes, if its directory is writable."""
