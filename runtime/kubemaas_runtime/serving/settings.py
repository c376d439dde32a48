"""Serving settings: one pydantic-settings object, env prefix ``KUBEMAAS_`` (contract 1).

The operator sets these as environment variables on the serving container; ``kubemaas serve``
flags override them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Everything ``kubemaas serve`` can be told."""

    model_config = SettingsConfigDict(env_prefix="KUBEMAAS_", extra="ignore", protected_namespaces=())

    model_dir: Path = Path("/mnt/models")
    """Directory holding a bundle (model.onnx + model.json) or a bare model.onnx."""
    model_name: str | None = None
    """Name served under /v2/models/{name}; default: the manifest's name, else the directory's name."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""
    batch_axis: int | None = Field(default=None, ge=0)
    """The axis along which requests may be merged, for a model whose model.json declares no
    ``batchAxis`` (a bare model.onnx, or a schema-1 manifest). It must be a dynamic dimension of
    every input and output. Unset (and no manifest declaration) means requests are never merged."""
    max_batch_size: int = Field(default=32, ge=1)
    """Most rows merged into one ONNX Runtime call when the model has a batch axis; 1 disables
    merging. It never enables merging by itself. With auto_batch_size on this is the upper
    bound the measured cap is chosen under."""
    auto_batch_size: bool = True
    """At warm-up, time ONNX Runtime at batch sizes 1, 2, 4, ... up to max_batch_size and cap
    batches at the smallest size within auto_batch_tolerance of the best rows/s (logged and
    exported as kubemaas_max_batch_rows); false caps batches at max_batch_size as given."""
    auto_batch_tolerance: float = Field(default=0.05, ge=0.0, lt=1.0)
    """How close (as a fraction of the best rows/s) a smaller batch size must come to be preferred."""
    max_delay_ms: float = Field(default=2.0, ge=0.0)
    """Longest a request waits for others to join its batch, in milliseconds."""
    max_queue: int = Field(default=256, ge=1)
    """Most requests waiting for a batch; beyond it requests get 503 with Retry-After."""
    intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime intra-op threads (0 lets ONNX Runtime choose)."""
    inter_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime inter-op threads (0 lets ONNX Runtime choose)."""
    auth_token: SecretStr | None = None
    """Bearer token clients must send; auth is off when neither this nor auth_token_file is set."""
    auth_token_file: Path | None = None
    """File holding the bearer token (a mounted Secret); read once at start."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Largest request body accepted, after decoding any Content-Encoding; bigger ones get 413."""
    max_buffered_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Most request-body bytes held in memory across all requests at once (exported as the
    kubemaas_buffered_request_bytes gauge). A request whose body would go past it gets 503 with
    Retry-After before its body is read (announced length) or as soon as it goes past (chunked)."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request line plus headers; bigger ones get 431 and the connection is closed."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a client may take to send its request line and headers; slower ones get 408."""
    body_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a client may take to send its whole body; slower ones get 408 (16 MiB takes
    well under a second in a cluster: a client this slow has stalled, and holds buffer space)."""
    compress_min_bytes: int = Field(default=64 * 1024, ge=0)
    """Responses at least this big are gzip- or deflate-encoded when the client's Accept-Encoding
    asks for it; smaller ones are sent as they are (compressing them costs more than it saves)."""
    termination_log: Path = Path("/dev/termination-log")
    """Where a failed start writes its reason (the pod's termination message), when writable."""
    retry_after_s: int = Field(default=1, ge=0)
    """Value of the Retry-After header on 503 answers when the queue is full."""
    drain_timeout_s: int | None = Field(default=30, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish (None waits forever)."""
    drain_linger_s: float = Field(default=2.0, ge=0)
    """On SIGTERM, how long open keep-alive connections are still served (every answer then says
    ``Connection: close``) before idle ones are closed, so pooled clients are not cut off mid-send."""
    log_level: str = "info"
    """uvicorn log level."""

    @model_validator(mode="after")
    def _token_source(self) -> ServingSettings:
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("set only one of auth_token and auth_token_file, not both")
        return self

    def bearer_token(self) -> str | None:
        """The token, read from the file when one is configured; None means auth is off."""
        if self.auth_token is not None:
            token = self.auth_token.get_secret_value().strip()
        elif self.auth_token_file is not None:
            try:
                token = self.auth_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"auth_token_file {str(self.auth_token_file)!r}: {exc.strerror}") from exc
        else:
            return None
        if not token:
            raise ValueError("the bearer token is empty; unset auth_token/auth_token_file to disable auth")
        return token
