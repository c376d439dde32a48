"""ModelService reconciliation in the order data flows: resolve the bundle (``artifact``) ->
compress it (``compress``) -> roll out the serving children (``rollout``) -> write the status
built from one ``Observed`` (``status``).

``sync()`` is level-based and idempotent: every entry point (watch events of the ModelService,
its children and TrainingJobs, the periodic resync) ends up here through the per-object work queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import children
from kubemaas_operator.controllers.modelservice import compression as jobs
from kubemaas_operator.controllers.modelservice.artifact import resolve_artifact
from kubemaas_operator.controllers.modelservice.canary import consume_command, decorate, step_rollout
from kubemaas_operator.controllers.modelservice.compress import CompressionResult, compress
from kubemaas_operator.controllers.modelservice.observe import deployment_health, replicas_outside_range
from kubemaas_operator.controllers.modelservice.rollout import PERMANENT_STATUSES, roll_out
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.controllers.modelservice.status import (
    Observed,
    build_status,
    invalid_spec_status,
    retrying_status,
)
from kubemaas_operator.kube import events
from kubemaas_operator.kube.client import ApiException, api_message
from kubemaas_operator.kube.manifests import API_VERSION, LABEL_COMPONENT, LABEL_MODELSERVICE
from kubemaas_operator.kube.patching import write_status
from kubemaas_operator.rollout.children import canary_name

KIND = "ModelService"
WARNING_PHASES = frozenset({"Failed"})
WAITING_RECHECK_S = 10.0
"""While a compression Job has no pod, look again this often: the Job controller reports a refused
pod (a quota) only as an Event, which no watch of ours sees."""


@dataclass(frozen=True)
class Outcome:
    """What one sync did: the status patch written (None when nothing changed) and when to sync again."""

    patch: dict[str, Any] | None = None
    requeue_after: float | None = None


def _settled(deploy: Mapping[str, Any], desired_hash: str | None) -> bool:
    health = deployment_health(deploy, [], desired_hash=desired_hash)
    return health.rolled_out and health.available and health.problem is None


async def _read(ctx: Context, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    cached = ctx.cache.get(kind, namespace, name)
    if cached is not None:
        return cached
    obj = await ctx.kube.get(api_version, kind, namespace, name)
    if obj is not None:
        ctx.cache.put(obj)
    return obj


async def sync(ctx: Context, namespace: str, name: str, *, force: bool = False) -> Outcome:
    """Reconcile one ModelService; what it wrote and when it wants to look again.

    The ModelService, its Deployment and pods are read from ``ctx.cache`` (fed by the watches;
    a miss falls back to the API). ``force`` re-applies every child even when the Deployment's
    children-hash says nothing changed. A transient API error is shown in the status (REASON
    ``RetryingAPIError``) and re-raised, so the work queue retries it with back-off.
    """
    msvc = await _read(ctx, API_VERSION, KIND, namespace, name)
    if msvc is None or msvc["metadata"].get("deletionTimestamp"):
        return Outcome()
    generation = int(msvc["metadata"].get("generation") or 0)
    old = msvc.get("status") or {}
    try:
        return await _sync(ctx, msvc, force=force)
    except kopf.PermanentError as exc:
        return Outcome(await _write(ctx, msvc, invalid_spec_status(old, generation, str(exc))))
    except ApiException as exc:
        if exc.status in PERMANENT_STATUSES:  # retrying cannot help: say so and stop
            return Outcome(await _write(ctx, msvc, invalid_spec_status(
                old, generation, f"the API server refused a child: {exc.status} {api_message(exc)}", "ChildRefused")))
        if exc.status == 404:
            raise
        message = f"API error {exc.status}: {api_message(exc)}; retrying with back-off"
        await _write(ctx, msvc, retrying_status(old, generation, message))
        raise


async def _write(ctx: Context, msvc: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Write the status; record an Event and log when phase or REASON changed."""
    meta = msvc["metadata"]
    old = msvc.get("status") or {}
    patch = await write_status(ctx.kube, KIND, meta["namespace"], meta["name"], old, new, cache=ctx.cache)
    if patch and ("phase" in patch or "reason" in patch):
        phase = new.get("phase") or old.get("phase")
        ready: Mapping[str, Any] = next((c for c in new.get("conditions") or [] if c.get("type") == "Ready"), {})
        reason = new.get("reason") or ready.get("reason")
        ctx.log.info(f"ModelService {meta['namespace']}/{meta['name']}: phase {phase}, reason {reason or '-'}")
        warning = phase in WARNING_PHASES or reason == "RetryingAPIError"
        await events.record(ctx.kube, {**msvc, "kind": KIND, "apiVersion": API_VERSION},
                            "Warning" if warning else "Normal", str(reason or phase or "Updated"),
                            str(new.get("message") or f"phase {phase}"))
    return patch


async def _sync(ctx: Context, msvc: dict[str, Any], *, force: bool) -> Outcome:
    meta = msvc["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    old = msvc.get("status") or {}
    spec = parse_modelservice(msvc.get("spec") or {})

    artifact = await resolve_artifact(ctx, namespace, spec)
    comp: CompressionResult | None = None
    if artifact.bundle is not None:
        comp = await compress(ctx, msvc, spec, artifact.bundle, old.get("compression") or {})

    deploy_name = children.predictor_name(name)
    if not old and ctx.cache.get("Deployment", namespace, deploy_name) is None:
        # A ModelService without any status was never synced, so it has no children yet (status is
        # written after them): no GET that would answer 404 on the way to creating the Deployment.
        deploy = None
    else:
        deploy = await _read(ctx, "apps/v1", "Deployment", namespace, deploy_name)
    # A new bundle is served only once it is known (and compressed); until then -- and when the
    # gate fails -- the Deployment keeps serving the revision its annotations record.
    serving = comp.serving if comp is not None and comp.serving is not None else children.serving_bundle_of(deploy)
    # spec.rollout: while a canary is judged, the stable Deployment keeps the stable revision (canary.py).
    canary = await step_rollout(ctx, msvc, spec, serving, deploy)
    serving = canary.stable
    replicas = spec.replicas if canary.stable_replicas is None else canary.stable_replicas
    desired_hash: str | None = None
    blocked = None
    if serving is not None:
        rollout = await roll_out(ctx, msvc, spec, serving, deploy, replicas=replicas, force=force)
        deploy, desired_hash, blocked = rollout.deploy, rollout.desired_hash, rollout.blocked
        if rollout.new_revision:
            await events.record(ctx.kube, {**msvc, "kind": KIND, "apiVersion": API_VERSION}, "Normal", "RollingOut",
                                f"applied the serving children (variant {serving.variant}, spec-hash {desired_hash})")
    pods: list[dict[str, Any]] = []
    fresh = deploy is not None and not (deploy.get("status") or {}).get("observedGeneration")
    if deploy is not None and not fresh and not _settled(deploy, desired_hash):
        # Pods only explain why a Deployment is not there yet; a settled one (or one the Deployment
        # controller has not seen yet) needs no list call.
        pods = ctx.cache.select("Pod", namespace, children.match_labels(name))
    health = deployment_health(
        deploy, pods, desired_hash=desired_hash, now=dt.datetime.now(dt.UTC), stuck_after_s=ctx.settings.stuck_after_s
    )
    # status.replicas (the scale subresource the HPA reads): stable and canary pods together.
    canary_deploy = ctx.cache.get("Deployment", namespace, canary_name(deploy_name))
    observed_replicas = sum(int(((d or {}).get("status") or {}).get("replicas") or 0) for d in (deploy, canary_deploy))
    observed = Observed(
        name=name, namespace=namespace, generation=int(meta.get("generation") or 0), old=old, spec=spec,
        artifact=artifact, comp=comp, serving=serving, deployed=deploy is not None, health=health,
        observed_replicas=observed_replicas,
        scale_note=replicas_outside_range(msvc, (msvc.get("spec") or {}).get("autoscaling")),
        blocked=blocked,
    )
    new = decorate(build_status(observed), canary, old, observed.generation)
    patch = await _write(ctx, msvc, new)
    if canary.consume is not None:  # the command's effect is in the status now: remove it
        await consume_command(ctx, msvc, canary.consume)
    if patch and new["phase"] == "Ready" and comp is not None and comp.status is not None:
        await _prune_compression_jobs(ctx, namespace, name, keep=str(comp.status["job"]))
    again = [t for t in (WAITING_RECHECK_S if comp is not None and comp.running else None, canary.requeue_s) if t]
    return Outcome(patch, min(again) if again else None)


async def _prune_compression_jobs(ctx: Context, namespace: str, name: str, *, keep: str) -> None:
    """Once a revision is Ready, Jobs that compressed earlier artifacts are superseded (status.compression
    now reports the current one): delete them with their pods."""
    selector = f"{LABEL_MODELSERVICE}={name},{LABEL_COMPONENT}={jobs.COMPONENT}"
    for job in await ctx.kube.list_objects("batch/v1", "Job", namespace, label_selector=selector):
        job_name = job["metadata"]["name"]
        if job_name != keep:
            await ctx.kube.delete("batch/v1", "Job", namespace, job_name)
            ctx.log.info(f"deleted superseded compression Job {namespace}/{job_name}")
