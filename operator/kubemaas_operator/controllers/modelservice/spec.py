"""The ModelService spec as a typed view (the CRD schema validates; this gives names and defaults).

``extra="ignore"`` so a newer CRD field never crashes an older operator. Defaults come from
``kubemaas_runtime.contracts`` (the CRD's are checked against them by tests/operator/test_contracts.py).
A new spec field goes here, in ``crds/modelservice.yaml`` (then ``bash charts/sync-crds.sh``), and
where it takes effect: ``children.py`` (the pods) or a reconcile step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubemaas_runtime import contracts

DEFAULT_MODEL_SIZE_LIMIT = "10Gi"
"""sizeLimit of the model emptyDir when spec.storage.sizeLimit is unset and the bundle's size unknown
(``storage.model_size_limit``)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class TrainingJobRef(_Spec):
    """A TrainingJob in the ModelService's namespace whose ``status.artifact`` is served."""

    name: str


class ModelSource(_Spec):
    """``spec.model``: exactly one of ``uri`` or ``trainingJobRef``."""

    uri: str | None = None
    training_job_ref: TrainingJobRef | None = Field(default=None, alias="trainingJobRef")
    storage_secret_name: str | None = Field(default=None, alias="storageSecretName")
    """Secret with storage credentials for fetch and compression (overrides the operator's)."""


class Compression(_Spec):
    """``spec.compression``: which variant to serve, under which accuracy budget.

    ``methods`` names what makes the candidates (quantize, prune, distill); students (prune,
    distill) enter the table only under ``mode: auto`` (a fixed mode names one of the teacher's
    variants), as the CRD's CEL rule says too. ``max_perplexity_increase`` is the gate of a
    text-generation bundle (None: the runtime's default, ``contracts.DEFAULT_MAX_PERPLEXITY_INCREASE``).
    """

    mode: contracts.CompressionMode | contracts.TextgenCompressionMode = contracts.DEFAULT_COMPRESSION_MODE
    max_accuracy_drop: float = Field(default=contracts.DEFAULT_MAX_ACCURACY_DROP, alias="maxAccuracyDrop", ge=0, le=1)
    methods: tuple[contracts.CompressionMethod, ...] = Field(
        default=contracts.DEFAULT_COMPRESSION_METHODS, min_length=1, max_length=len(contracts.COMPRESSION_METHODS))
    max_perplexity_increase: float | None = Field(default=None, alias="maxPerplexityIncrease", ge=0, le=10)

    @field_validator("methods")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"each method at most once, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _students_need_auto(self) -> Compression:
        students = sorted(set(self.methods) & contracts.STUDENT_METHODS)
        if students and self.mode != "auto":
            raise ValueError(
                f"methods {students} make students, which only mode auto compares; got mode {self.mode!r}")
        return self

    @property
    def students(self) -> bool:
        """Whether prune or distill is asked for (the compression pod then runs the training image)."""
        return bool(set(self.methods) & contracts.STUDENT_METHODS)


class EnvVar(_Spec):
    """One extra env var of the serving container."""

    name: str
    value: str = ""


class Resources(_Spec):
    """Compute requests and limits (Kubernetes quantities)."""

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class Runtime(_Spec):
    """``spec.runtime``: the serving container (``kubemaas serve``)."""

    image: str | None = None
    max_batch_size: int = Field(default=contracts.DEFAULT_MAX_BATCH_SIZE, alias="maxBatchSize", ge=1)
    max_delay_ms: float = Field(default=contracts.DEFAULT_MAX_DELAY_MS, alias="maxDelayMs", ge=0)
    max_queue: int = Field(default=contracts.DEFAULT_MAX_QUEUE, alias="maxQueue", ge=1)
    batch_axis: int | None = Field(default=None, alias="batchAxis", ge=0)
    """The input axis requests are merged along (the manifest's declared one when unset)."""
    threads: int = Field(default=contracts.DEFAULT_THREADS, ge=1)
    auth_secret_name: str | None = Field(default=None, alias="authSecretName")
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)


class Storage(_Spec):
    """``spec.storage``: the model volume of every serving pod."""

    size_limit: str | None = Field(default=None, alias="sizeLimit")
    """sizeLimit of the emptyDir the storage initializer fills (a Kubernetes quantity); None: derived
    from the bundle's recorded size, else DEFAULT_MODEL_SIZE_LIMIT (``storage.model_size_limit``)."""


class Autoscaling(_Spec):
    """``spec.autoscaling``: an autoscaling/v2 HPA on CPU that scales the ModelService itself.

    The HPA's ``scaleTargetRef`` is the ModelService's scale subresource, so it writes
    ``spec.replicas`` (the total behind the one Service) and the operator splits that total
    between the stable and canary Deployments by the rollout's weight.
    """

    min_replicas: int = Field(default=1, alias="minReplicas", ge=1)
    max_replicas: int = Field(alias="maxReplicas", ge=1)
    target_cpu: int = Field(default=80, alias="targetCPUUtilizationPercentage", ge=1, le=100)


class ModelServiceSpec(_Spec):
    """``spec`` of a ModelService."""

    model: ModelSource
    compression: Compression = Field(default_factory=Compression)
    runtime: Runtime = Field(default_factory=Runtime)
    storage: Storage = Field(default_factory=Storage)
    replicas: int = Field(default=1, ge=0)
    """Serving pods in all, stable and canary together (the scale subresource the HPA writes)."""
    autoscaling: Autoscaling | None = None


def parse_modelservice(spec: Mapping[str, Any]) -> ModelServiceSpec:
    """Validate a ModelService spec.

    Raises kopf.PermanentError naming the field and the value when it is invalid.
    """
    try:
        parsed = ModelServiceSpec.model_validate(dict(spec))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "spec." + ".".join(str(p) for p in err["loc"])
        raise kopf.PermanentError(f"{field}: {err['msg']} (got {err.get('input')!r})") from exc
    if (parsed.model.uri is None) == (parsed.model.training_job_ref is None):
        raise kopf.PermanentError("spec.model: exactly one of uri or trainingJobRef must be set")
    return parsed
