"""Settings of the storage initializer (env prefix ``KUBEMAAS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """How ``kubemaas fetch`` and ``upload`` reach storage."""

    model_config = SettingsConfigDict(env_prefix="KUBEMAAS_", extra="ignore")

    pvc_root: Path = Path("/mnt/pvc")
    """Where the operator mounts claims: ``pvc://<claim>/<path>`` reads ``<pvc_root>/<claim>/<path>``."""

    s3_endpoint: str | None = None
    """S3 endpoint URL (MinIO and friends). Unset: boto3's own ``AWS_ENDPOINT_URL`` or AWS defaults."""

    http_timeout_s: float = Field(default=60.0, gt=0)
    """Socket timeout for one http(s) request, in seconds."""

    attempts: int = Field(default=3, ge=1, le=20)
    """Tries per file for transient failures (connection refused, 5xx); 404s are not retried."""

    retry_backoff_s: float = Field(default=0.5, ge=0)
    """First pause between tries; doubles after each failed try."""
