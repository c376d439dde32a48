"""Settings of the training runtime (env prefix ``KUBEMAAS_``); the rank layout comes from the
torch.distributed env contract instead (see ``distributed.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """Knobs the operator or a user sets as environment variables."""

    model_config = SettingsConfigDict(env_prefix="KUBEMAAS_", extra="ignore")

    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend; ``auto`` picks nccl when CUDA is available, else gloo."""

    master_wait_s: float = Field(default=300.0, gt=0)
    """How long ranks > 0 wait for the master's TCP port to accept connections before failing."""

    master_poll_s: float = Field(default=0.5, gt=0)
    """First pause between connection attempts to the master (doubles, capped at 5 s)."""

    threads: int | None = Field(default=None, ge=1, le=1024)
    """torch intra-op threads per rank; unset keeps torch's default (every core the process sees)."""

    pg_timeout_s: float = Field(default=1800.0, gt=0)
    """Timeout of collective operations once the process group is up."""

    termination_log: Path = Path("/dev/termination-log")
    """Where rank 0 writes the termination message (only if the directory exists and is writable)."""

    source_namespace: str | None = None
    """Namespace of the TrainingJob, recorded as the bundle's source (set by the operator)."""

    source_name: str | None = None
    """Name of the TrainingJob, recorded as the bundle's source."""

    source_uid: str | None = None
    """UID of the TrainingJob, recorded as the bundle's source."""
