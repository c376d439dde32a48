"""The TrainingJob spec as a typed view (the CRD schema validates; defaults are repeated here for
pure callers). A new TrainingJob spec field goes here, in ``crds/trainingjob.yaml``, and where
it takes effect (``children.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kubemaas_operator.kube.manifests import stable_hash

DEFAULT_MASTER_PORT = 23456


class _Camel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Recipe(_Camel):
    """A built-in recipe, run as ``kubemaas train --recipe NAME``."""

    name: Literal["digits", "sequence", "textgen"]
    epochs: int | None = None
    batch_size: int | None = Field(default=None, alias="batchSize")
    lr: float | None = None
    seed: int | None = None
    prune_amount: float | None = Field(default=None, alias="pruneAmount")
    params: dict[str, int | str] = Field(default_factory=dict)
    """The recipe's own hyper-parameters (``kubemaas train --set KEY=VALUE``), validated by the recipe."""


class PodTemplate(_Camel):
    """Overrides of every rank's pod."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    env: list[dict[str, Any]] = Field(default_factory=list)


class Output(_Camel):
    """Where the bundle goes; a set ``uri`` promises an artifact."""

    uri: str | None = None
    storage_secret_name: str | None = Field(default=None, alias="storageSecretName")
    """Secret with storage credentials for the output URI (overrides the operator's)."""


class RunPolicy(_Camel):
    """Kubeflow's runPolicy: restarts, deadline, TTL, pod clean-up, suspension."""

    backoff_limit: int = Field(default=3, alias="backoffLimit")
    active_deadline_seconds: int | None = Field(default=None, alias="activeDeadlineSeconds")
    ttl_seconds_after_finished: int | None = Field(default=None, alias="ttlSecondsAfterFinished")
    clean_pod_policy: Literal["None", "Running", "All"] = Field(default="None", alias="cleanPodPolicy")
    suspend: bool = False


class TrainingJobSpec(_Camel):
    """The CRD's spec (validated by the API server; defaults repeated here for pure callers)."""

    replicas: int = 1
    procs_per_node: int = Field(default=1, alias="procsPerNode")
    backend: Literal["gloo", "nccl"] = "gloo"
    master_port: int = Field(default=DEFAULT_MASTER_PORT, alias="masterPort")
    recipe: Recipe | None = None
    image: str | None = None
    image_pull_policy: str | None = Field(default=None, alias="imagePullPolicy")
    command: list[str] | None = None
    args: list[str] | None = None
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pod_template: PodTemplate = Field(default_factory=PodTemplate, alias="podTemplate")
    output: Output = Field(default_factory=Output)
    run_policy: RunPolicy = Field(default_factory=RunPolicy, alias="runPolicy")

    @property
    def world_size(self) -> int:
        """Processes in the gang: replicas * procsPerNode."""
        return self.replicas * self.procs_per_node

    @property
    def promises_artifact(self) -> bool:
        """Whether rank 0 must report a bundle: always for a recipe, for user code when output.uri is set."""
        return self.recipe is not None or bool(self.output.uri)

    def shape_hash(self) -> str:
        """8 hex chars over the gang's shape (replicas, procsPerNode, recipe, image/command/args):
        what may change only while the TrainingJob is suspended (the CRD's transition rule)."""
        return stable_hash(self.model_dump(mode="json", include=SHAPE_FIELDS), 8)


SHAPE_FIELDS = {"replicas", "procs_per_node", "recipe", "image", "command", "args"}
"""The gang's shape (JobSet's immutable-unless-suspended fields)."""


def parse_spec(spec: Mapping[str, Any]) -> TrainingJobSpec:
    """The typed view of a TrainingJob's ``spec`` (raises pydantic.ValidationError when malformed)."""
    return TrainingJobSpec.model_validate(dict(spec))
