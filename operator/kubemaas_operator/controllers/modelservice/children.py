"""ModelService children: Deployment (fetch init container + kubemaas serve), Service, HPA. Pure.

A spec field that changes the serving pods takes effect here (``serving_env`` for a runtime
setting, ``deployment`` for the pod shape); everything here enters ``spec_hash``, so pods roll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.modelservice.spec import DEFAULT_MODEL_SIZE_LIMIT, ModelServiceSpec
from kubemaas_operator.controllers.modelservice.storage import model_size_limit
from kubemaas_operator.kube.manifests import (
    ANNOTATION_SPEC_HASH,
    API_VERSION,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MODELSERVICE,
    child_name,
    container_security_context,
    effective_storage_secret,
    image_pull_secrets,
    labels,
    owner_reference,
    pod_security_context,
    pvc_claim,
    pvc_volume,
    selector_string,
    stable_hash,
    storage_env_from,
)
from kubemaas_operator.rollout.children import LABEL_TRACK, STABLE, http_route_of
from kubemaas_operator.settings import OperatorSettings
from kubemaas_runtime import contracts
from kubemaas_runtime.contracts import ServingEnv, StorageEnv

COMPONENT = "predictor"
MODEL_DIR = contracts.MODEL_DIR
AUTH_DIR = "/var/run/secrets/kubemaas/auth"
CONTAINER = "kserve-container"
FETCH_CONTAINER = "storage-initializer"
ANNOTATION_BUNDLE_URI = f"{GROUP}/bundle-uri"
ANNOTATION_BUNDLE_SHA = f"{GROUP}/bundle-sha256"
ANNOTATION_VARIANT = f"{GROUP}/variant"
ANNOTATION_SIZE = f"{GROUP}/size-bytes"
ANNOTATION_BUNDLE_BYTES = f"{GROUP}/bundle-bytes"
"""Bytes a fetch of the served bundle writes, when known (the model volume is sized from it)."""
ANNOTATION_SOURCE_URI = f"{GROUP}/source-uri"
ANNOTATION_SOURCE_SHA = f"{GROUP}/source-sha256"
ANNOTATION_SOURCE = f"{GROUP}/source"
"""``Kind/namespace/name`` of the object the bundle was trained by (lineage)."""
ANNOTATION_SOURCE_UID = f"{GROUP}/source-uid"
"""metadata.uid of that object: a TrainingJob deleted and recreated under the same name is another run."""
ANNOTATION_AUTOSCALED = f"{GROUP}/autoscaled"
ANNOTATION_TASK = f"{GROUP}/task"
"""The bundle's task when known (``text-generation`` for a textgen lineage)."""
ANNOTATION_PERPLEXITY = f"{GROUP}/perplexity"
ANNOTATION_TOKENS_PER_SECOND = f"{GROUP}/tokens-per-second"


@dataclass(frozen=True)
class ServingBundle:
    """The bundle a Deployment serves (after compression, if any)."""

    uri: str
    sha256: str
    variant: str = "none"
    """The compression variant served; "none" when compression.mode is none (the bundle as given)."""
    size_bytes: int | None = None
    source_uri: str | None = None
    """The bundle before compression (None when it is served as given)."""
    source_sha256: str | None = None
    source: tuple[str, str, str] | None = None
    """(kind, namespace, name) of the TrainingJob that produced the bundle."""
    source_uid: str | None = None
    """metadata.uid of that TrainingJob."""
    task: str | None = None
    """The bundle's task when known: ``text-generation`` from a textgen TrainingJob or a perplexity-gated
    compression report; None when the operator cannot tell (it never opens the bundle)."""
    perplexity: float | None = None
    """Text generation: held-out perplexity of the served model (compression report, else training metrics)."""
    tokens_per_second: float | None = None
    """Text generation: decode tokens/s at batch 1 the compression Job measured for the served variant."""
    bundle_bytes: int | None = None
    """Bytes a fetch of the bundle writes (model.json and every file it lists), as the TrainingJob's
    artifact or the compression report records it; None when unknown (a ``uri`` bundle)."""

    def annotations(self) -> dict[str, str]:
        """The Deployment annotations recording this bundle (read back by ``serving_bundle_of``)."""
        out = {ANNOTATION_BUNDLE_URI: self.uri, ANNOTATION_VARIANT: self.variant}
        if self.sha256:
            out[ANNOTATION_BUNDLE_SHA] = self.sha256
        if self.size_bytes is not None:
            out[ANNOTATION_SIZE] = str(self.size_bytes)
        if self.source_uri:
            out[ANNOTATION_SOURCE_URI] = self.source_uri
        if self.source_sha256:
            out[ANNOTATION_SOURCE_SHA] = self.source_sha256
        if self.source:
            out[ANNOTATION_SOURCE] = "/".join(self.source)
        if self.source_uid:
            out[ANNOTATION_SOURCE_UID] = self.source_uid
        if self.task:
            out[ANNOTATION_TASK] = self.task
        if self.perplexity is not None:
            out[ANNOTATION_PERPLEXITY] = _num(round(self.perplexity, 4))
        if self.tokens_per_second is not None:
            out[ANNOTATION_TOKENS_PER_SECOND] = _num(round(self.tokens_per_second, 1))
        if self.bundle_bytes is not None:
            out[ANNOTATION_BUNDLE_BYTES] = str(self.bundle_bytes)
        return out

    def status(self) -> dict[str, Any]:
        """status.model"""
        out: dict[str, Any] = {"uri": self.uri, "variant": self.variant}
        if self.sha256:
            out["sha256"] = self.sha256
        if self.size_bytes is not None:
            out["sizeBytes"] = self.size_bytes
        if self.source_uri:
            out["sourceUri"] = self.source_uri
        if self.source_sha256:
            out["sourceSha256"] = self.source_sha256
        if self.source:
            out["source"] = {"kind": self.source[0], "namespace": self.source[1], "name": self.source[2]}
            if self.source_uid:
                out["source"]["uid"] = self.source_uid
        if self.task:
            out["task"] = self.task
        if self.perplexity is not None:
            out["perplexity"] = round(self.perplexity, 4)
        if self.tokens_per_second is not None:
            out["tokensPerSecond"] = round(self.tokens_per_second, 1)
        return out


def predictor_name(msvc: str) -> str:
    """The serving Deployment's (and HPA's) name: the ModelService's own."""
    return child_name(msvc)


def match_labels(msvc: str) -> dict[str, str]:
    """Labels selecting the serving pods of ``msvc`` (the Deployment's and the Service's selector)."""
    return {LABEL_MODELSERVICE: msvc, LABEL_COMPONENT: COMPONENT}


def selector(msvc: str) -> str:
    """status.selector for the scale subresource (the Deployment's pods)."""
    return selector_string(match_labels(msvc))


def url(msvc: str, namespace: str) -> str:
    """The in-cluster Open Inference Protocol v2 URL of ``msvc`` (status.url)."""
    return f"http://{msvc}.{namespace}.svc.cluster.local/v2/models/{msvc}"


def _metadata(owner: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels(COMPONENT, meta["name"], **{LABEL_MODELSERVICE: meta["name"]}),
        "ownerReferences": [owner_reference(owner)],
    }


def serving_env(name: str, spec: ModelServiceSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Contract 1: the serving settings as KUBEMAAS_* env vars."""
    rt = spec.runtime
    env: list[dict[str, Any]] = [
        {"name": ServingEnv.MODEL_DIR, "value": MODEL_DIR},
        {"name": ServingEnv.MODEL_NAME, "value": name},
        {"name": ServingEnv.HOST, "value": "0.0.0.0"},
        {"name": ServingEnv.PORT, "value": str(settings.runtime_port)},
        {"name": ServingEnv.MAX_BATCH_SIZE, "value": str(rt.max_batch_size)},
        {"name": ServingEnv.MAX_DELAY_MS, "value": _num(rt.max_delay_ms)},
        {"name": ServingEnv.MAX_QUEUE, "value": str(rt.max_queue)},
        {"name": ServingEnv.INTRA_OP_THREADS, "value": str(rt.threads)},
        {"name": ServingEnv.INTER_OP_THREADS, "value": "1"},
        {"name": ServingEnv.DRAIN_TIMEOUT_S, "value": str(settings.drain_timeout_s)},
    ]
    if rt.batch_axis is not None:
        env.append({"name": ServingEnv.BATCH_AXIS, "value": str(rt.batch_axis)})
    if rt.auth_secret_name:
        env.append({"name": ServingEnv.AUTH_TOKEN_FILE, "value": f"{AUTH_DIR}/token"})
    reserved = {e["name"] for e in env}
    env += [{"name": e.name, "value": e.value} for e in rt.env if e.name not in reserved]
    return env


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def serving_resources(spec: ModelServiceSpec, settings: OperatorSettings) -> dict[str, Any]:
    """spec.runtime.resources, with the operator's default cpu/memory requests where the spec
    sets neither a request nor a limit for them: an HPA computes CPU utilisation against the
    request, so without one it can never scale. (A limit alone already makes the API server
    default the request to it; a default request above that limit would be rejected.)"""
    res = spec.runtime.resources
    requests = {k: str(v) for k, v in res.requests.items()}
    limits = {k: str(v) for k, v in res.limits.items()}
    for key, default in (("cpu", settings.default_cpu_request), ("memory", settings.default_memory_request)):
        if default and key not in requests and key not in limits:
            requests[key] = default
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def termination_grace_s(settings: OperatorSettings) -> int:
    """preStop sleep + the runtime's drain + 5 s for the process to exit, so the kubelet never
    kills a pod that is still answering the requests it accepted before endpoints dropped it."""
    return settings.prestop_sleep_s + settings.drain_timeout_s + 5


def spec_hash(name: str, spec: ModelServiceSpec, bundle: ServingBundle, settings: OperatorSettings) -> str:
    """Everything that should roll the pods: the bundle, the runtime spec, the image and port, and the
    model volume's sizeLimit (only when it is not the 10Gi default, so Deployments made before the
    limit could be derived keep their hash)."""
    size_limit = model_size_limit(spec.storage, bundle.bundle_bytes)
    return stable_hash(
        {
            "name": name,
            "bundle": [bundle.uri, bundle.sha256, bundle.variant],
            "runtime": spec.runtime.model_dump(mode="json", by_alias=True),
            "image": spec.runtime.image or settings.serving_image,
            "port": settings.runtime_port,
            **({"storageSecret": spec.model.storage_secret_name} if spec.model.storage_secret_name else {}),
            **({"storage": {"sizeLimit": size_limit}} if size_limit != DEFAULT_MODEL_SIZE_LIMIT else {}),
        }
    )


def deployment(
    owner: Mapping[str, Any], spec: ModelServiceSpec, bundle: ServingBundle, settings: OperatorSettings,
    *, replicas: int | None = None,
) -> dict[str, Any]:
    """The serving Deployment with ``replicas`` pods (default: ``spec.replicas``, all of them).

    The operator always owns the Deployment's replicas: an HPA scales the ModelService (its scale
    subresource), and a canary step passes the stable share of that total here.
    """
    name = owner["metadata"]["name"]
    image = spec.runtime.image or settings.serving_image
    pod_labels = {**labels(COMPONENT, name, **{LABEL_MODELSERVICE: name}), **match_labels(name)}
    if http_route_of(owner):  # the HTTPRoute's stable backend selects these pods only (rollout.children)
        pod_labels[LABEL_TRACK] = STABLE
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {"sizeLimit": model_size_limit(spec.storage, bundle.bundle_bytes)}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    fetch_mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    serve_mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    claim = pvc_claim(bundle.uri)
    if claim:
        volume, mount = pvc_volume(claim, settings.pvc_root, read_only=True)
        volumes.append(volume)
        fetch_mounts.append(mount)
    if spec.runtime.auth_secret_name:
        volumes.append(
            {"name": "auth", "secret": {"secretName": spec.runtime.auth_secret_name, "defaultMode": 0o440,
                                        "items": [{"key": "token", "path": "token"}]}}
        )
        serve_mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
    probe_common = {"timeoutSeconds": 2}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["serve", "--model-dir", MODEL_DIR],
        "command": ["kubemaas"],
        "ports": [{"name": "http", "containerPort": settings.runtime_port, "protocol": "TCP"}],
        "env": serving_env(name, spec, settings),
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
            **probe_common,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
            **probe_common,
        },
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
            **probe_common,
        },
        "volumeMounts": serve_mounts,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = serving_resources(spec, settings)
    if resources:
        container["resources"] = resources
    if settings.prestop_sleep_s:
        # Endpoint removal is asynchronous to SIGTERM: keep serving while kube-proxies and
        # ingress controllers catch up, then drain (the native sleep action, Kubernetes >= 1.30).
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.prestop_sleep_s}}}
    secret, optional = effective_storage_secret(spec.model.storage_secret_name, settings.storage_secret_name)
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubemaas"],
        "args": ["fetch", bundle.uri, MODEL_DIR],
        "env": [{"name": StorageEnv.PVC_ROOT, "value": settings.pvc_root}],
        "envFrom": storage_env_from(secret, optional=optional),
        "volumeMounts": fetch_mounts,
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    digest = spec_hash(name, spec, bundle, settings)
    deploy_spec: dict[str, Any] = {
        "selector": {"matchLabels": match_labels(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "progressDeadlineSeconds": settings.progress_deadline_s,
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": {ANNOTATION_SPEC_HASH: digest}},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(settings.run_as_user),
                "terminationGracePeriodSeconds": termination_grace_s(settings),
                "initContainers": [fetch],
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if not fetch["envFrom"]:
        del fetch["envFrom"]
    if settings.image_pull_secrets:
        deploy_spec["template"]["spec"]["imagePullSecrets"] = image_pull_secrets(settings.image_pull_secrets)
    deploy_spec["replicas"] = spec.replicas if replicas is None else replicas
    meta = _metadata(owner, predictor_name(name))
    meta["annotations"] = {**bundle.annotations(), ANNOTATION_SPEC_HASH: digest}
    if spec.autoscaling is not None:
        meta["annotations"][ANNOTATION_AUTOSCALED] = "true"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deploy_spec}


def serving_bundle_of(deploy: Mapping[str, Any] | None) -> ServingBundle | None:
    """The bundle an existing Deployment serves (from its annotations), if any."""
    if not deploy:
        return None
    ann = (deploy.get("metadata") or {}).get("annotations") or {}
    uri, sha = ann.get(ANNOTATION_BUNDLE_URI), ann.get(ANNOTATION_BUNDLE_SHA, "")
    if not uri:
        return None
    size, bundle_bytes = ann.get(ANNOTATION_SIZE), ann.get(ANNOTATION_BUNDLE_BYTES)
    source = ann.get(ANNOTATION_SOURCE, "").split("/")
    return ServingBundle(
        uri=uri,
        sha256=sha,
        variant=ann.get(ANNOTATION_VARIANT, "none"),
        size_bytes=int(size) if size and size.isdigit() else None,
        source_uri=ann.get(ANNOTATION_SOURCE_URI),
        source_sha256=ann.get(ANNOTATION_SOURCE_SHA),
        source=(source[0], source[1], source[2]) if len(source) == 3 else None,
        source_uid=ann.get(ANNOTATION_SOURCE_UID),
        task=ann.get(ANNOTATION_TASK),
        perplexity=_float(ann.get(ANNOTATION_PERPLEXITY)),
        tokens_per_second=_float(ann.get(ANNOTATION_TOKENS_PER_SECOND)),
        bundle_bytes=int(bundle_bytes) if bundle_bytes and bundle_bytes.isdigit() else None,
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def service(owner: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """ClusterIP Service ``<name>`` port service_port -> the runtime's named port."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, child_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": match_labels(name),
            "ports": [{"name": "http", "port": settings.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(owner: Mapping[str, Any], spec: ModelServiceSpec) -> dict[str, Any] | None:
    """autoscaling/v2 HPA on CPU scaling the ModelService, or None when spec.autoscaling is unset.

    Its ``scaleTargetRef`` is the ModelService (the CRD's scale subresource: spec.replicas,
    status.replicas, status.selector), not a Deployment, so autoscaling applies to the total of
    stable and canary pods and a canary step splits whatever the HPA decides (Argo Rollouts
    points its HPAs at the Rollout the same way).
    """
    if spec.autoscaling is None:
        return None
    name = owner["metadata"]["name"]
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, predictor_name(name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": "ModelService", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu},
                    },
                }
            ],
        },
    }
