"""Step 3 of a ModelService sync: roll out the serving children (Deployment, Service, HPA).

Children are server-side applied only when their hash changed (or on a forced sync), never
over an object another resource controls (a Conflict instead), and a refusal by the API
server that no retry can fix (400, 422: a name the API will not accept) is reported, not retried.

The operator always applies the Deployment's ``spec.replicas``: the HPA scales the ModelService
(its scale subresource), so turning autoscaling on or off never hands the Deployment's replica
field to another writer, and capacity never drops in between -- the HPA starts from the current
``spec.replicas`` and only moves it within [minReplicas, maxReplicas]. When autoscaling goes
away, the HPA is deleted first, so it cannot write ``spec.replicas`` afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import children
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.kube.client import ApiException, api_message
from kubemaas_operator.kube.conditions import Condition, false
from kubemaas_operator.kube.manifests import ANNOTATION_SPEC_HASH, GROUP, stable_hash
from kubemaas_operator.kube.ownership import conflict, foreign_controller

ANNOTATION_CHILDREN_HASH = f"{GROUP}/children-hash"
PERMANENT_STATUSES = frozenset({400, 422})
"""API refusals no retry can fix (a malformed or invalid object)."""


@dataclass(frozen=True)
class Rollout:
    """What the Deployment looks like after this step, and why the step stopped, if it did."""

    deploy: dict[str, Any] | None
    desired_hash: str | None
    blocked: Condition | None = None
    """Ready=False Conflict or ChildRefused: the children were (partly) not applied."""
    new_revision: bool = False
    """Whether this step applied a new pod template (a new bundle, runtime spec or image)."""


def refused(child: Mapping[str, Any], exc: ApiException) -> Condition:
    """Ready=False ChildRefused, carrying the API server's message."""
    meta = child["metadata"]
    return false("Ready", "ChildRefused",
                 f"the API server refused {child['kind']} {meta['name']}: {exc.status} {api_message(exc)}")


async def _read(ctx: Context, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    cached = ctx.cache.get(kind, namespace, name)
    return cached if cached is not None else await ctx.kube.get(api_version, kind, namespace, name)


async def roll_out(
    ctx: Context, msvc: Mapping[str, Any], spec: ModelServiceSpec, serving: ServingBundle,
    deploy: dict[str, Any] | None, *, replicas: int, force: bool,
) -> Rollout:
    """Apply the Deployment (``replicas`` pods), Service and HPA serving ``serving`` when they changed.

    Raises ApiException for transient API errors (the work queue retries with back-off).
    """
    meta = msvc["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    want = children.deployment(msvc, spec, serving, ctx.settings, replicas=replicas)
    svc = children.service(msvc, ctx.settings)
    hpa = children.hpa(msvc, spec)
    desired_hash = want["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    digest = stable_hash([want, svc, hpa])
    want["metadata"]["annotations"][ANNOTATION_CHILDREN_HASH] = digest
    observed_ann = ((deploy or {}).get("metadata") or {}).get("annotations") or {}
    if not (force or deploy is None or observed_ann.get(ANNOTATION_CHILDREN_HASH) != digest):
        return Rollout(deploy, desired_hash)
    existing: list[tuple[dict[str, Any], dict[str, Any] | None]] = [(want, deploy), (svc, await _read(ctx, "v1", "Service", namespace, svc["metadata"]["name"]))]
    if hpa is not None:
        existing.append((hpa, await _read(ctx, "autoscaling/v2", "HorizontalPodAutoscaler", namespace, name)))
    for wanted, current in existing:
        owner = foreign_controller(current, uid)
        if owner is not None:
            return Rollout(None if current is deploy else deploy, desired_hash, conflict(wanted, owner))
    child: Mapping[str, Any] = want
    try:
        if hpa is None and observed_ann.get(children.ANNOTATION_AUTOSCALED) == "true":
            # Autoscaling removed: the HPA goes first, so it cannot scale against spec.replicas.
            await ctx.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", namespace, children.predictor_name(name))
        # The Deployment first (it is what starts the pods), then the Service and the HPA together.
        applied_deploy = await ctx.kube.apply(want)
        ctx.cache.put(applied_deploy)
        deploy = applied_deploy
        rest: list[tuple[Mapping[str, Any], Awaitable[Any]]] = [(svc, ctx.kube.apply(svc))]
        if hpa is not None:
            rest.append((hpa, ctx.kube.apply(hpa)))
        results = await asyncio.gather(*(call for _, call in rest), return_exceptions=True)
        for (applied, _), result in zip(rest, results, strict=True):
            if isinstance(result, BaseException):
                child = applied
                raise result
    except ApiException as exc:
        if exc.status in PERMANENT_STATUSES:
            return Rollout(deploy, desired_hash, refused(child, exc))
        raise
    ctx.log.info(f"applied Deployment/Service{'/HPA' if hpa else ''} {namespace}/{name} "
                 f"(spec-hash {desired_hash}, variant {serving.variant})")
    return Rollout(deploy, desired_hash, new_revision=observed_ann.get(ANNOTATION_SPEC_HASH) != desired_hash)
