"""Settings of the storage initializer (env prefix ``KUBEMAAS_``).

``load_settings()`` is the one way the commands build them: it turns pydantic's
multi-line validation report into a one-line ``StorageError`` naming the env var.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubemaas_runtime.contracts import ENV_PREFIX, env_name
from kubemaas_runtime.storage.errors import StorageError

GIB = 1 << 30


def check_endpoint(setting: str, value: str) -> str:
    """Return ``value`` if it is an ``http(s)://host[:port][/path]`` URL, else raise ``StorageError``.

    boto3 refuses an endpoint without a scheme with a traceback ("Invalid endpoint");
    ``minio.kubeflow:9000`` even parses as scheme ``minio.kubeflow``, so the scheme is checked by name.
    """
    parts = urlsplit(value)
    port_ok = True
    try:
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query or parts.fragment:
        host = value.split("://", 1)[-1].strip("/") or "minio.example:9000"
        raise StorageError(
            f"{setting}={value!r}: expected an http:// or https:// URL with a host and optional port, "
            f"such as http://{host}"
        )
    return value


class StorageSettings(BaseSettings):
    """How ``kubemaas fetch`` and ``upload`` reach storage, and the limits a fetch obeys."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    pvc_root: Path = Path("/mnt/pvc")
    """Where the operator mounts claims: ``pvc://<claim>/<path>`` reads ``<pvc_root>/<claim>/<path>``."""

    s3_endpoint: str | None = None
    """S3 endpoint URL, ``http(s)://host[:port]`` (MinIO and friends). Unset: boto3's own
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (checked the same way) or AWS defaults."""

    stall_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds a download (http(s) or s3) may go without receiving a byte before the try fails."""

    deadline_s: float = Field(default=1800.0, gt=0)
    """Seconds one whole fetch may take, every file, retry and pause included."""

    max_redirects: int = Field(default=5, ge=0, le=30)
    """Redirects followed per http(s) request; only same-scheme or http -> https ones are."""

    max_bundle_bytes: int = Field(default=256 * GIB, ge=1)
    """Most bytes one fetch may write: the sum of the manifest's file sizes, every download and
    everything an archive extracts to. Far above any real bundle; it stops a runaway, not a model."""

    max_expansion_ratio: float = Field(default=100.0, ge=1)
    """Most bytes an archive may extract to per byte of archive (fp32 weights compress ~1.1:1;
    a bomb, 1 MiB -> 1 GiB, is 1000:1)."""

    attempts: int = Field(default=3, ge=1, le=20)
    """Tries per file for transient failures (connection refused, 5xx, stall, truncation); 404s are not retried."""

    retry_backoff_s: float = Field(default=0.5, ge=0)
    """First pause between tries; doubles after each failed try."""

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        if value:
            try:
                check_endpoint(env_name("s3_endpoint"), value)
            except StorageError as exc:
                raise ValueError(str(exc)) from exc
        return value or None


def load_settings(**overrides: object) -> StorageSettings:
    """``StorageSettings`` from the environment (and ``overrides``), or a one-line ``StorageError``.

    The message names each bad env var, its value and what is expected, e.g.
    ``KUBEMAAS_S3_ENDPOINT='minio.kubeflow:9000': expected an http:// or https:// URL ...``.
    """
    try:
        return StorageSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            if message.startswith(env_name(field)):
                problems.append(message)
            else:
                problems.append(f"{env_name(field)}={error.get('input')!r}: {message}")
        raise StorageError("invalid storage settings: " + "; ".join(problems)) from None
