"""Operator configuration: one pydantic-settings object, env prefix ``KUBEMAAS_``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kubemaas_runtime import contracts

QUANTITY = r"^([0-9]+(\.[0-9]+)?(m|[kMGTPE]|[KMGTPE]i)?)?$"
"""A Kubernetes resource quantity such as 250m, 1.5 or 256Mi (or empty)."""


class OperatorSettings(BaseSettings):
    """Everything the operator needs to know that is not in a custom resource."""

    model_config = SettingsConfigDict(
        env_prefix="KUBEMAAS_", extra="ignore", use_attribute_docstrings=True, frozen=True
    )

    serving_image: str = "kubemaas/serving:0.1.0"
    """Image of serving pods (fetch init container and ``kubemaas serve``) and compression Jobs when
    the ModelService names none (the Dockerfile's ``serving`` target)."""

    training_image: str = "kubemaas/training:0.1.0"
    """Image of TrainingJob recipe pods (the Dockerfile's ``training`` target); user code names its own."""

    operator_image: str = "kubemaas/operator:0.1.0"
    """The operator's own image (the Dockerfile's ``operator`` target), for reference in logs."""

    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    """imagePullPolicy of every container the operator creates."""

    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces to watch (comma-separated in the env var); empty means all namespaces."""

    resync_period_s: float = Field(default=300.0, gt=0)
    """Safety-net resync of every object, on top of the watches that drive reconciliation."""

    model_store_uri: str = "pvc://kubemaas-models"
    """Where compression Jobs write their output bundles (pvc://claim[/path], s3://bucket/prefix, file://)."""

    pvc_root: str = "/mnt/pvc"
    """Mount root for pvc:// claims inside workload pods (contract 2: $KUBEMAAS_PVC_ROOT/<claim>)."""

    runtime_port: int = Field(default=contracts.SERVING_PORT, ge=1, le=65535)
    """Container port of ``kubemaas serve``."""

    service_port: int = Field(default=80, ge=1, le=65535)
    """Port of the ClusterIP Service in front of a ModelService."""

    field_manager: str = "kubemaas-operator"
    """Server-side apply field manager name for every child object."""

    api_concurrency: int = Field(default=16, ge=1, le=256)
    """Threads for blocking Kubernetes API calls (the client is synchronous). Service writes, which
    the API server serialises, have 8 threads of their own on top (cluster.SLOW_LANE_WIDTH)."""

    run_as_user: int = Field(default=10001, ge=1)
    """Non-root UID (and GID, fsGroup) of every workload pod."""

    progress_deadline_s: int = Field(default=600, ge=1)
    """progressDeadlineSeconds of serving Deployments (ProgressDeadlineExceeded surfaces as REASON)."""

    compression_deadline_s: int = Field(default=3600, ge=1)
    """activeDeadlineSeconds of compression Jobs."""

    stuck_after_s: float = Field(default=120.0, ge=0)
    """A running serving container that stays unready this long is reported as ReadinessProbeFailing."""

    storage_secret_name: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", max_length=253)
    """Secret whose keys become env of every fetch, compression and training container (envFrom,
    optional), e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for s3:// URIs;
    empty means none. spec.model.storageSecretName / spec.output.storageSecretName override it."""

    image_pull_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """imagePullSecrets (names, comma-separated in the env var) of every workload pod."""

    default_cpu_request: str = Field(default="250m", pattern=QUANTITY)
    """CPU request of serving containers whose spec sets neither a cpu request nor a cpu limit
    (an HPA cannot compute utilisation without one); empty means none."""

    default_memory_request: str = Field(default="256Mi", pattern=QUANTITY)
    """Memory request of serving containers whose spec sets neither a memory request nor limit; empty means none."""

    prestop_sleep_s: int = Field(default=5, ge=0, le=300)
    """preStop sleep of serving containers, so endpoints drop a terminating pod before it drains; 0 disables."""

    drain_timeout_s: int = Field(default=contracts.DEFAULT_DRAIN_TIMEOUT_S, ge=0, le=3600)
    """KUBEMAAS_DRAIN_TIMEOUT_S of the serving runtime; terminationGracePeriodSeconds covers
    the preStop sleep plus this plus 5 s."""

    liveness: str | None = None
    """kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz (the chart's probe); off when unset."""

    @field_validator("namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value
