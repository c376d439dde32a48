"""ModelService reconciliation: resolve the bundle -> compress -> roll out -> report status.

``sync()`` is level-based and idempotent: it reads the ModelService and its children fresh,
server-side-applies what should exist, and writes the whole status when it changed. Every
entry point (kopf create/update/resume handlers, watches on children and TrainingJobs, the
resync timer) ends up here through the per-object work queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from kubemaas_operator import cluster, status
from kubemaas_operator.cache import Cache
from kubemaas_operator.manifests import compression as compression_manifests
from kubemaas_operator.manifests import modelservice as manifests
from kubemaas_operator.manifests.common import (
    ANNOTATION_SPEC_HASH,
    API_VERSION,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MODELSERVICE,
    stable_hash,
)
from kubemaas_operator.observe import (
    DeploymentHealth,
    deployment_health,
    ignored_scale,
    job_outcome,
    pod_problem,
)
from kubemaas_operator.settings import OperatorSettings
from kubemaas_operator.specs import ModelServiceSpec, parse_modelservice
from kubemaas_operator.status import Condition, false, true

ANNOTATION_CHILDREN_HASH = f"{GROUP}/children-hash"
FATAL_POD_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class Resolution:
    """Where the (uncompressed) bundle comes from, or why there is none yet."""

    condition: Condition
    bundle: manifests.ServingBundle | None
    fatal: bool = False


@dataclass(frozen=True)
class CompressionResult:
    condition: Condition
    serving: manifests.ServingBundle | None
    status: dict[str, Any] | None
    running: bool = False
    failed: bool = False


# -- resolve -----------------------------------------------------------------------------------


async def resolve_artifact(namespace: str, spec: ModelServiceSpec) -> Resolution:
    if spec.model.uri:
        uri = spec.model.uri
        return Resolution(true("ArtifactReady", "URIGiven", f"bundle {uri}"), manifests.ServingBundle(uri=uri, sha256=""))
    assert spec.model.training_job_ref is not None  # parse_modelservice guarantees exactly one
    ref = spec.model.training_job_ref.name
    tj = await cluster.get(API_VERSION, "TrainingJob", namespace, ref)
    return resolve_training_job(namespace, ref, tj)


def resolve_training_job(namespace: str, ref: str, tj: Mapping[str, Any] | None) -> Resolution:
    """Pure: a TrainingJob (or None) -> its artifact, or why we wait."""
    if tj is None:
        return Resolution(
            false("ArtifactReady", "WaitingForTraining", f"TrainingJob {namespace}/{ref} does not exist yet"), None
        )
    st = tj.get("status") or {}
    phase = st.get("phase") or "Pending"
    artifact = st.get("artifact") or {}
    if phase == "Succeeded" and artifact.get("uri") and artifact.get("sha256"):
        bundle = manifests.ServingBundle(
            uri=str(artifact["uri"]), sha256=str(artifact["sha256"]), source=("TrainingJob", namespace, ref),
            source_uid=str((tj.get("metadata") or {}).get("uid") or "") or None,
        )
        return Resolution(
            true("ArtifactReady", "TrainingSucceeded",
                 f"TrainingJob {ref} produced {artifact['uri']} (sha256 {str(artifact['sha256'])[:12]})"),
            bundle,
        )
    if phase == "Failed":
        detail = st.get("message") or "no message"
        return Resolution(false("ArtifactReady", "TrainingFailed", f"TrainingJob {ref} failed: {detail}"), None, True)
    return Resolution(
        false("ArtifactReady", "WaitingForTraining", f"waiting for TrainingJob {ref} to succeed (phase {phase})"), None
    )


# -- compress ----------------------------------------------------------------------------------


def _gate_message(report: compression_manifests.Report, max_drop: float) -> str:
    return f"no variant within maxAccuracyDrop {max_drop}: {report.drops()}"


def _served(
    report: compression_manifests.Report, source: manifests.ServingBundle
) -> manifests.ServingBundle | None:
    if report.bundle is None or not report.selected:
        return None
    chosen = report.variant(report.selected)
    return manifests.ServingBundle(
        uri=report.bundle.uri,
        sha256=report.bundle.sha256,
        variant=report.selected,
        size_bytes=chosen.size_bytes if chosen else None,
        source_uri=source.uri,
        source_sha256=source.sha256 or None,
        source=source.source,
        source_uid=source.source_uid,
    )


def judge_report(
    base: Mapping[str, Any], state: str, message: str, source: manifests.ServingBundle, max_drop: float
) -> CompressionResult:
    """Pure: a finished compression Job's termination message -> condition, bundle, status."""
    try:
        report = compression_manifests.parse_report(message)
    except compression_manifests.ReportError as exc:
        why = message.strip()[-800:] if state == "Failed" and message.strip() else str(exc)
        reason = "CompressionFailed" if state == "Failed" else "CompressionReportInvalid"
        return CompressionResult(
            false("Compressed", reason, f"compression Job {base['job']}: {why}"), None,
            {**base, "state": "Failed", "selected": None, "reason": why, "bundle": None, "variants": []},
            failed=True,
        )
    served = _served(report, source) if state == "Succeeded" else None
    comp_status = {**base, "state": "Succeeded" if served else "Failed", **report.status()}
    if served is not None:
        return CompressionResult(
            true("Compressed", "VariantSelected", f"selected {report.selected}: {report.reason}".strip(": ")),
            served, comp_status,
        )
    if not report.selected:
        return CompressionResult(
            false("Compressed", "AccuracyGateFailed", _gate_message(report, max_drop)), None, comp_status, failed=True
        )
    return CompressionResult(
        false("Compressed", "CompressionFailed", f"compression Job {base['job']}: {report.reason or message[:500]}"),
        None, comp_status, failed=True,
    )


def from_status(old: Mapping[str, Any], source: manifests.ServingBundle, max_drop: float) -> CompressionResult:
    """A finished result recorded in status.compression (the Job's pod may be long gone)."""
    report = compression_manifests.Report.model_validate(
        {k: old.get(k) for k in ("selected", "reason", "bundle", "variants") if old.get(k) is not None}
    )
    served = _served(report, source) if old.get("state") == "Succeeded" else None
    if served is not None:
        return CompressionResult(
            true("Compressed", "VariantSelected", f"selected {report.selected}: {report.reason}".strip(": ")),
            served, dict(old),
        )
    if report.variants and not report.selected:
        return CompressionResult(
            false("Compressed", "AccuracyGateFailed", _gate_message(report, max_drop)), None, dict(old), failed=True
        )
    return CompressionResult(
        false("Compressed", "CompressionFailed", f"compression Job {old.get('job')}: {report.reason}"),
        None, dict(old), failed=True,
    )


async def compress(
    msvc: Mapping[str, Any],
    spec: ModelServiceSpec,
    source: manifests.ServingBundle,
    old: Mapping[str, Any],
    settings: OperatorSettings,
) -> CompressionResult:
    comp = spec.compression
    if comp.mode == "none":
        return CompressionResult(
            true("Compressed", "NotRequested", "compression.mode is none: the bundle is served as given"), source, None
        )
    namespace, name = msvc["metadata"]["namespace"], msvc["metadata"]["name"]
    identity = source.sha256 or f"uri:{source.uri}"
    job_name = compression_manifests.job_name(name, identity, spec)
    base = {
        "job": job_name,
        "mode": comp.mode,
        "maxAccuracyDrop": comp.max_accuracy_drop,
        "sourceSha256": source.sha256 or None,
    }
    if old.get("job") == job_name and old.get("state") in ("Succeeded", "Failed"):
        return from_status(old, source, comp.max_accuracy_drop)
    job = await cluster.get("batch/v1", "Job", namespace, job_name)
    if job is None:
        await cluster.apply(compression_manifests.job(msvc, spec, source.uri, identity, settings))
        return _running(base, job_name)
    pods = await cluster.list_objects(
        "v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    outcome = job_outcome(job, pods, compression_manifests.CONTAINER)
    if outcome.state == "Running":
        now = dt.datetime.now(dt.UTC)
        stuck = next((p for p in (pod_problem(pod, now=now, stuck_after_s=float("inf")) for pod in pods) if p), None)
        running = _running(base, job_name)
        if stuck is not None:  # e.g. the compression pod's image cannot be pulled
            return CompressionResult(false("Compressed", stuck.reason, stuck.message), None, running.status,
                                     running=True)
        return running
    message = outcome.message or f"{outcome.reason}: the Job's pod left no termination message"
    return judge_report(base, outcome.state, message, source, comp.max_accuracy_drop)


def _running(base: Mapping[str, Any], job_name: str) -> CompressionResult:
    return CompressionResult(
        false("Compressed", "Compressing", f"compression Job {job_name} is measuring variants"), None,
        {**base, "state": "Running", "selected": None, "bundle": None, "variants": [], "reason": ""},
        running=True,
    )


# -- status ------------------------------------------------------------------------------------


def build_status(
    *,
    name: str,
    namespace: str,
    generation: int,
    old: Mapping[str, Any],
    spec: ModelServiceSpec,
    artifact: Resolution,
    comp: CompressionResult | None,
    serving: manifests.ServingBundle | None,
    deployed: bool,
    health: DeploymentHealth,
    observed_replicas: int,
    now: str | None = None,
    scale_note: str | None = None,
) -> dict[str, Any]:
    """Pure: everything observed -> the full ModelService status (None values delete keys)."""
    conds: list[Condition] = [artifact.condition]
    if comp is not None:
        conds.append(comp.condition)
    elif spec.compression.mode == "none":
        conds.append(true("Compressed", "NotRequested", "compression.mode is none: the bundle is served as given"))
    else:
        conds.append(false("Compressed", "WaitingForArtifact", "compression starts once the bundle is known"))
    problem = health.problem
    if not deployed:
        avail = false("Available", "NotDeployed", "no serving Deployment yet")
    elif health.replicas == 0:
        avail = false("Available", "ScaledToZero", "replicas is 0")
    elif health.available:
        avail = true(
            "Available", "MinimumReplicasAvailable",
            f"{health.available_replicas}/{health.replicas} replicas available",
        )
    elif problem is not None:
        avail = false("Available", problem.reason, problem.message)
    else:
        avail = false("Available", "ReplicasUnavailable", f"{health.ready_replicas}/{health.replicas} replicas ready")
    if scale_note:  # e.g. kubectl scale while the HPA owns replicas (observe.ignored_scale)
        avail = status.Condition(avail.type, avail.status, avail.reason, f"{avail.message}; {scale_note}")
    conds.append(avail)
    blocker = status.first_failing(conds[:2])
    url = manifests.url(name, namespace)
    if blocker is not None:
        ready = false("Ready", blocker.reason, blocker.message)
    elif health.rolled_out and avail.ok:
        ready = true("Ready", "ModelServing", f"serving variant {serving.variant if serving else '?'} at {url}")
    elif problem is not None:
        ready = false("Ready", problem.reason, problem.message)
    elif not avail.ok:
        ready = false("Ready", avail.reason, avail.message)
    else:
        ready = false(
            "Ready", "RollingOut",
            f"{health.updated_replicas}/{health.replicas} replicas updated, "
            f"{health.available_replicas}/{health.replicas} available",
        )
    conds.append(ready)
    failed = artifact.fatal or (comp is not None and comp.failed) or (
        problem is not None and problem.reason in FATAL_POD_REASONS | {"ProgressDeadlineExceeded", "CrashLoopBackOff"}
    )
    if ready.ok:
        phase = "Ready"
    elif failed:
        phase = "Failed"
    elif comp is not None and comp.running:
        phase = "Compressing"
    elif artifact.bundle is None and not deployed:
        phase = "Pending"
    else:
        phase = "RollingOut"
    return {
        "phase": phase,
        "observedGeneration": generation,
        "url": url,
        "replicas": observed_replicas,
        "readyReplicas": health.ready_replicas,
        "updatedReplicas": health.updated_replicas,
        "selector": manifests.selector(name),
        "reason": None if ready.ok else _reason_column(ready, comp),
        "message": (scale_note or None) if ready.ok else ready.message,
        "conditions": status.merge_conditions(old.get("conditions"), conds, generation=generation, now=now),
        "model": serving.status() if serving is not None and deployed else None,
        "compression": comp.status if comp is not None else None,
    }


def _reason_column(ready: Condition, comp: CompressionResult | None) -> str:
    """status.reason (the REASON printer column): the Ready reason, naming the drop for a failed gate."""
    if ready.reason == compression_manifests.GATE_FAILED and comp is not None and comp.status:
        return compression_manifests.gate_reason(comp.status)
    return ready.reason


def _replacing(old: Any, new: Any) -> Any:
    """``new`` as a merge-patch value that also deletes keys ``old`` had and ``new`` lacks."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = {k: _replacing(old.get(k), v) for k, v in new.items()}
        out.update({k: None for k in old if k not in new})
        return out
    return new


def _stored(value: Any) -> Any:
    """``value`` as the API server stores it after a merge patch: None-valued keys are absent."""
    if isinstance(value, Mapping):
        return {k: _stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch turning ``old`` into ``new`` (keys of ``new``), or None when equal."""
    patch = {
        k: _replacing(old.get(k), v)
        for k, v in new.items()
        if old.get(k) != _stored(v) and not (v is None and k not in old)
    }
    return patch or None


# -- sync --------------------------------------------------------------------------------------


def _settled(deploy: Mapping[str, Any], desired_hash: str | None) -> bool:
    health = deployment_health(deploy, [], desired_hash=desired_hash)
    return health.rolled_out and health.available and health.problem is None


def _children_hash(children: list[dict[str, Any] | None]) -> str:
    return stable_hash(children)


async def _read(cache: Cache | None, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    cached = cache.get(kind, namespace, name) if cache is not None else None
    if cached is not None:
        return cached
    obj = await cluster.get(api_version, kind, namespace, name)
    if obj is not None and cache is not None:
        cache.put(obj)
    return obj


async def sync(
    namespace: str,
    name: str,
    settings: OperatorSettings,
    logger: Any,
    *,
    force: bool = False,
    cache: Cache | None = None,
) -> dict[str, Any] | None:
    """Reconcile one ModelService; returns the status patch written (None when unchanged/gone).

    With ``cache``, the ModelService, its Deployment and pods are read from it (fed by the
    watches; a miss falls back to the API). ``force`` re-applies every child even when the
    Deployment's children-hash says nothing changed.
    """
    msvc = await _read(cache, API_VERSION, "ModelService", namespace, name)
    if msvc is None or msvc["metadata"].get("deletionTimestamp"):
        return None
    generation = int(msvc["metadata"].get("generation") or 0)
    old = msvc.get("status") or {}
    try:
        spec = parse_modelservice(msvc.get("spec") or {})
    except kopf.PermanentError as exc:
        bad = false("Ready", "InvalidSpec", str(exc))
        new = {
            "phase": "Failed", "observedGeneration": generation, "reason": bad.reason, "message": bad.message,
            "conditions": status.merge_conditions(old.get("conditions"), [bad], generation=generation),
        }
        patch = status_patch(old, new)
        if patch:
            await cluster.patch_status(API_VERSION, "ModelService", namespace, name, patch)
        return patch

    artifact = await resolve_artifact(namespace, spec)
    comp: CompressionResult | None = None
    if artifact.bundle is not None:
        comp = await compress(msvc, spec, artifact.bundle, old.get("compression") or {}, settings)
    deploy_name = manifests.predictor_name(name)
    if cache is not None and not old and cache.get("Deployment", namespace, deploy_name) is None:
        # A ModelService without any status was never synced, so it has no children yet (status is
        # written after them): no GET that would answer 404 on the way to creating the Deployment.
        deploy = None
    else:
        deploy = await _read(cache, "apps/v1", "Deployment", namespace, deploy_name)
    # A new bundle is served only once it is known (and compressed); until then -- and when the
    # gate fails -- the Deployment keeps serving the revision its annotations record.
    serving = comp.serving if comp is not None and comp.serving is not None else manifests.serving_bundle_of(deploy)
    desired_hash: str | None = None
    if serving is not None:
        want = manifests.deployment(msvc, spec, serving, settings)
        svc = manifests.service(msvc, settings)
        hpa = manifests.hpa(msvc, spec)
        desired_hash = want["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
        children = _children_hash([want, svc, hpa])
        want["metadata"]["annotations"][ANNOTATION_CHILDREN_HASH] = children
        observed_ann = ((deploy or {}).get("metadata") or {}).get("annotations") or {}
        if force or deploy is None or observed_ann.get(ANNOTATION_CHILDREN_HASH) != children:
            # The Deployment first (it is what starts the pods), then the Service and the HPA together.
            deploy = await cluster.apply(want)
            if cache is not None:
                cache.put(deploy)
            rest: list[Awaitable[Any]] = [cluster.apply(svc)]
            if hpa is not None:
                rest.append(cluster.apply(hpa))
            elif observed_ann.get(manifests.ANNOTATION_AUTOSCALED) == "true":
                rest.append(cluster.delete("autoscaling/v2", "HorizontalPodAutoscaler", namespace, deploy_name))
            await asyncio.gather(*rest)
            logger.info(f"applied Deployment/Service{'/HPA' if hpa else ''} {namespace}/{name} "
                        f"(spec-hash {desired_hash}, variant {serving.variant})")
    pods: list[dict[str, Any]] = []
    fresh = deploy is not None and not (deploy.get("status") or {}).get("observedGeneration")
    if deploy is not None and not fresh and not _settled(deploy, desired_hash):
        # Pods only explain why a Deployment is not there yet; a settled one (or one the Deployment
        # controller has not seen yet) needs no list call.
        if cache is not None:
            pods = cache.select("Pod", namespace, manifests.match_labels(name))
        else:
            pods = await cluster.list_objects("v1", "Pod", namespace, label_selector=manifests.selector(name))
    health = deployment_health(
        deploy, pods, desired_hash=desired_hash, now=dt.datetime.now(dt.UTC), stuck_after_s=settings.stuck_after_s
    )
    new = build_status(
        name=name,
        namespace=namespace,
        generation=generation,
        old=old,
        spec=spec,
        artifact=artifact,
        comp=comp,
        serving=serving,
        deployed=deploy is not None,
        health=health,
        observed_replicas=int(((deploy or {}).get("status") or {}).get("replicas") or 0),
        scale_note=ignored_scale(
            msvc, (msvc.get("spec") or {}).get("autoscaling"), int(((deploy or {}).get("status") or {}).get("replicas") or 0)
        ),
    )
    patch = status_patch(old, new)
    if patch:
        written = await cluster.patch_status(API_VERSION, "ModelService", namespace, name, patch)
        if written is not None and cache is not None:
            cache.put(written)
        if "phase" in patch or "reason" in patch:
            logger.info(f"ModelService {namespace}/{name}: phase {new['phase']}, reason {new['reason'] or '-'}")
        if new["phase"] == "Ready" and comp is not None and comp.status is not None:
            await _prune_compression_jobs(namespace, name, keep=str(comp.status["job"]), logger=logger)
    return patch


async def _prune_compression_jobs(namespace: str, name: str, *, keep: str, logger: Any) -> None:
    """Once a revision is Ready, Jobs that compressed earlier artifacts are superseded (status.compression
    now reports the current one): delete them with their pods."""
    selector = f"{LABEL_MODELSERVICE}={name},{LABEL_COMPONENT}={compression_manifests.COMPONENT}"
    for job in await cluster.list_objects("batch/v1", "Job", namespace, label_selector=selector):
        job_name = job["metadata"]["name"]
        if job_name != keep:
            await cluster.delete("batch/v1", "Job", namespace, job_name)
            logger.info(f"deleted superseded compression Job {namespace}/{job_name}")
