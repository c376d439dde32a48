"""TrainingJob children: headless Service + Indexed Job (one Job per gang generation). Pure.

Naming (deterministic, so every call is idempotent):

- the headless Service is ``<tj>-workers`` and selects every pod of the TrainingJob;
- generation ``g`` (``g`` = ``status.restarts``) is the Indexed Job ``<tj>-r<g>``; the job
  controller names its pods' hostnames ``<tj>-r<g>-<index>``, so with ``subdomain:
  <tj>-workers`` rank 0 resolves at ``<tj>-r<g>-0.<tj>-workers`` (``MASTER_ADDR``) from any
  pod in the namespace.

Env contract on every rank (Kubeflow PyTorchJob's, both forms):

- plain: ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` = replicas * procsPerNode (all
  processes), ``RANK`` = the pod's completion index (its node rank; equal to the global rank
  when procsPerNode is 1);
- torchrun: ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``, ``PET_NNODES`` = replicas,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` = the completion index. With procsPerNode > 1
  the recipe runs under ``torchrun --no-python``, which reads these and gives each process
  its own ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (overriding the plain ones);
- ``KUBEMAAS_SOURCE_NAMESPACE/NAME/UID`` (the bundle's lineage) and
  ``KUBEMAAS_TERMINATION_LOG`` (where rank 0 writes its result, contract 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubemaas_operator.controllers.trainingjob.spec import TrainingJobSpec
from kubemaas_operator.kube import manifests as common
from kubemaas_runtime import contracts
from kubemaas_runtime.contracts import StorageEnv, TrainingEnv

COMPONENT = "training"
CONTAINER = "trainer"
LABEL_RESTART = f"{common.GROUP}/restart"
"""Pod and Job label: the gang generation (``status.restarts`` when the Job was created)."""
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""Annotation (and label) the job controller puts on every pod of an Indexed Job."""
TERMINATION_LOG = contracts.TERMINATION_LOG
ANNOTATION_SHAPE = f"{common.GROUP}/gang-shape"
"""Job annotation: ``TrainingJobSpec.shape_hash()`` of the gang the Job runs."""


def service_name(tj: str) -> str:
    """``<tj>-workers``: not ``<tj>``, which a ModelService of the same name uses for its Service."""
    return f"{tj}-workers"


def job_name(tj: str, restarts: int) -> str:
    """``<tj>-r<restarts>``: the Indexed Job of gang generation ``restarts``."""
    return f"{tj}-r{restarts}"


def master_addr(tj: str, restarts: int) -> str:
    """Rank 0's stable DNS name: Indexed Job pods get hostname ``<job>-<index>``."""
    return f"{job_name(tj, restarts)}-0.{service_name(tj)}"


def selector_labels(tj: str) -> dict[str, str]:
    """Labels selecting every pod of ``tj`` (the headless Service's selector)."""
    return {common.LABEL_TRAININGJOB: tj}


def child_labels(tj: str, restarts: int | None = None) -> dict[str, str]:
    """Labels of a child of ``tj`` (and of its pods), with the generation when given."""
    extra = selector_labels(tj)
    if restarts is not None:
        extra[LABEL_RESTART] = str(restarts)
    return common.labels(COMPONENT, tj, **extra)


def output_uri(spec: TrainingJobSpec, model_store_uri: str, namespace: str, tj: str) -> str:
    """``spec.output.uri``, else ``<model store>/<namespace>/<name>`` (the same across restarts,
    so a restarted gang resumes from the checkpoint the previous one left there)."""
    if spec.output.uri:
        return spec.output.uri
    return f"{model_store_uri.rstrip('/')}/{namespace}/{tj}"


def train_command(spec: TrainingJobSpec, tj: str, output: str) -> list[str]:
    """The container command: user code as given, else ``kubemaas train`` for the recipe
    (under ``torchrun --no-python`` when there is more than one process per pod)."""
    if spec.command is not None:
        return list(spec.command) + list(spec.args or [])
    recipe = spec.recipe
    if recipe is None:  # the CRD's CEL rule makes this unreachable through the API server
        raise ValueError(f"TrainingJob {tj}: exactly one of spec.recipe or spec.command must be set")
    cmd = ["kubemaas", "train", "--recipe", recipe.name, "--output", output, "--name", tj]
    for flag, value in (
        ("--epochs", recipe.epochs),
        ("--batch-size", recipe.batch_size),
        ("--lr", recipe.lr),
        ("--seed", recipe.seed),
        ("--prune-amount", recipe.prune_amount),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    for key, param in sorted(recipe.params.items()):
        cmd += ["--set", f"{key}={param}"]
    if spec.procs_per_node > 1:
        # torchrun takes --nnodes/--nproc-per-node/--node-rank/--master-* from the PET_* env;
        # its own restarts are off because a failed rank restarts the whole gang (the operator).
        cmd = ["torchrun", "--no-python", "--max-restarts=0", *cmd]
    return cmd


def _rank_from_index() -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}


def env_contract(spec: TrainingJobSpec, owner: Mapping[str, Any], restarts: int) -> list[dict[str, Any]]:
    """The Kubeflow env contract of every rank (plain and torchrun forms) plus the lineage env; see the module doc."""
    meta = owner["metadata"]
    tj = str(meta["name"])
    addr = master_addr(tj, restarts)
    port = str(spec.master_port)
    return [
        {"name": "MASTER_ADDR", "value": addr},
        {"name": "MASTER_PORT", "value": port},
        {"name": "WORLD_SIZE", "value": str(spec.world_size)},
        {"name": "RANK", "valueFrom": _rank_from_index()},
        {"name": "PET_MASTER_ADDR", "value": addr},
        {"name": "PET_MASTER_PORT", "value": port},
        {"name": "PET_NNODES", "value": str(spec.replicas)},
        {"name": "PET_NPROC_PER_NODE", "value": str(spec.procs_per_node)},
        {"name": "PET_NODE_RANK", "valueFrom": _rank_from_index()},
        {"name": TrainingEnv.BACKEND, "value": spec.backend},
        {"name": TrainingEnv.SOURCE_NAMESPACE, "value": str(meta["namespace"])},
        {"name": TrainingEnv.SOURCE_NAME, "value": tj},
        {"name": TrainingEnv.SOURCE_UID, "value": str(meta["uid"])},
        {"name": TrainingEnv.TERMINATION_LOG, "value": TERMINATION_LOG},
    ]


def build_service(owner: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any]:
    """Headless Service giving every rank a stable DNS name before it is ready
    (``publishNotReadyAddresses``: rank 0 must resolve while the gang is still starting)."""
    tj = str(owner["metadata"]["name"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(tj),
            "namespace": owner["metadata"]["namespace"],
            "labels": child_labels(tj),
            "ownerReferences": [common.owner_reference(owner)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(tj),
            "ports": [
                {"name": "master", "port": spec.master_port, "targetPort": spec.master_port, "protocol": "TCP"}
            ],
        },
    }


def build_job(
    owner: Mapping[str, Any],
    spec: TrainingJobSpec,
    *,
    restarts: int,
    output: str,
    image: str,
    image_pull_policy: str,
    run_as_user: int,
    pvc_root: str,
    active_deadline_seconds: int | None,
    storage_secret_name: str = "",
    image_pull_secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """The Indexed Job of gang generation ``restarts``.

    ``backoffLimit: 0``: the job controller fails the Job at its first failed pod and stops the
    other ranks; the operator then restarts the whole gang as the next generation.
    ``activeDeadlineSeconds`` is what is left of ``runPolicy.activeDeadlineSeconds`` (the caller
    subtracts the time earlier generations used). ``storage_secret_name`` (the operator-wide
    one; ``spec.output.storageSecretName`` wins) becomes envFrom of the trainer. No ``ttlSecondsAfterFinished`` here: the
    operator deletes finished children itself, so the job controller never removes a Job the
    operator would then recreate.
    """
    meta = owner["metadata"]
    tj = str(meta["name"])
    labels = child_labels(tj, restarts)
    env = env_contract(spec, owner, restarts)
    env += [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.procs_per_node > 1:
        # torch's shared-memory tensors between local ranks need more than the runtime's 64Mi /dev/shm.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    claim = common.pvc_claim(output)
    if claim is not None:
        volume, mount = common.pvc_volume(claim, pvc_root, read_only=False)
        volumes.append(volume)
        mounts.append(mount)
        env.append({"name": StorageEnv.PVC_ROOT, "value": pvc_root})
    env += [dict(e) for e in spec.pod_template.env]

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or image,
        "imagePullPolicy": spec.image_pull_policy or image_pull_policy,
        "command": train_command(spec, tj, output),
        "env": env,
        "ports": [{"name": "master", "containerPort": spec.master_port, "protocol": "TCP"}],
        "securityContext": common.container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    secret, optional = common.effective_storage_secret(spec.output.storage_secret_name, storage_secret_name)
    env_from = common.storage_env_from(secret, optional=optional)
    if env_from:
        container["envFrom"] = env_from
    if spec.resources:
        container["resources"] = {k: dict(v) for k, v in spec.resources.items() if v}

    template = spec.pod_template
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service_name(tj),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": common.pod_security_context(run_as_user),
        "containers": [container],
        "volumes": volumes,
    }
    if template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in template.tolerations]
    if template.service_account_name:
        pod_spec["serviceAccountName"] = template.service_account_name
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = common.image_pull_secrets(image_pull_secrets)

    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.replicas,
        "parallelism": spec.replicas,
        "backoffLimit": 0,
        "suspend": spec.run_policy.suspend,
        "template": {
            # The operator's labels win over the user's: the Service selects on them.
            "metadata": {"labels": {**template.labels, **labels}, "annotations": dict(template.annotations)},
            "spec": pod_spec,
        },
    }
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, active_deadline_seconds)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(tj, restarts),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {ANNOTATION_SHAPE: spec.shape_hash()},
            "ownerReferences": [common.owner_reference(owner)],
        },
        "spec": job_spec,
    }
