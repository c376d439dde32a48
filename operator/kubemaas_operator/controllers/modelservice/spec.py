"""Typed views of custom resource specs (the CRD schema validates; these give names and defaults).

``extra="ignore"`` so a newer CRD field never crashes an older operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import kopf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CompressionMode = Literal["none", "auto", "int8-dynamic", "int8-static", "fp16"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class TrainingJobRef(_Spec):
    name: str


class ModelSource(_Spec):
    uri: str | None = None
    training_job_ref: TrainingJobRef | None = Field(default=None, alias="trainingJobRef")
    storage_secret_name: str | None = Field(default=None, alias="storageSecretName")
    """Secret with storage credentials for fetch and compression (overrides the operator's)."""


class Compression(_Spec):
    mode: CompressionMode = "none"
    max_accuracy_drop: float = Field(default=0.01, alias="maxAccuracyDrop", ge=0, le=1)


class EnvVar(_Spec):
    name: str
    value: str = ""


class Resources(_Spec):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class Runtime(_Spec):
    image: str | None = None
    max_batch_size: int = Field(default=32, alias="maxBatchSize", ge=1)
    max_delay_ms: float = Field(default=2.0, alias="maxDelayMs", ge=0)
    max_queue: int = Field(default=256, alias="maxQueue", ge=1)
    threads: int = Field(default=1, ge=1)
    auth_secret_name: str | None = Field(default=None, alias="authSecretName")
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)


class Autoscaling(_Spec):
    min_replicas: int = Field(default=1, alias="minReplicas", ge=1)
    max_replicas: int = Field(alias="maxReplicas", ge=1)
    target_cpu: int = Field(default=80, alias="targetCPUUtilizationPercentage", ge=1, le=100)


class ModelServiceSpec(_Spec):
    model: ModelSource
    compression: Compression = Field(default_factory=Compression)
    runtime: Runtime = Field(default_factory=Runtime)
    replicas: int = Field(default=1, ge=0)
    autoscaling: Autoscaling | None = None


def parse_modelservice(spec: Mapping[str, Any]) -> ModelServiceSpec:
    """Validate a ModelService spec; a bad one is a kopf.PermanentError naming the field and value."""
    try:
        parsed = ModelServiceSpec.model_validate(dict(spec))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "spec." + ".".join(str(p) for p in err["loc"])
        raise kopf.PermanentError(f"{field}: {err['msg']} (got {err.get('input')!r})") from exc
    if (parsed.model.uri is None) == (parsed.model.training_job_ref is None):
        raise kopf.PermanentError("spec.model: exactly one of uri or trainingJobRef must be set")
    return parsed
