"""ModelService handlers: thin entry points into ``reconcile.sync`` through the work queue.

- every watch event of a ModelService (the initial listing at startup included): kick it;
- events of owned Deployments, Jobs and Pods (label ``kubemaas.io/modelservice``): kick the owner;
- events of TrainingJobs: kick every ModelService whose trainingJobRef names it (``@kopf.index``);
- every ``resync_period_s``: a forced resync of every ModelService as a safety net.

ModelServices use a watching handler (``@kopf.on.event``), not kopf's create/update/resume
handlers: ``sync`` is level-based (it compares the desired children with the observed ones by
hash), so kopf's change detection adds nothing, and it is what the operator spends most of its
CPU on under load -- a deep copy of the whole object (managedFields included) for every event,
and a patch of kopf's diff-base annotation after every change, which itself comes back as one
more event. The work queue retries failed syncs with backoff, as kopf would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import reconcile
from kubemaas_operator.kube.cache import Cache
from kubemaas_operator.kube.client import ApiException
from kubemaas_operator.kube.manifests import API_VERSION, GROUP, LABEL_MODELSERVICE, VERSION
from kubemaas_operator.kube.observe import pod_attention
from kubemaas_operator.kube.workqueue import Key, WorkQueue

MODELSERVICES = (GROUP, VERSION, "modelservices")
TRAININGJOBS = (GROUP, VERSION, "trainingjobs")
OWNED = {LABEL_MODELSERVICE: kopf.PRESENT}

log = logging.getLogger("kubemaas.modelservice")


def _remember(cache: Cache, type: str | None, body: kopf.Body, kind: str) -> None:
    meta = body.get("metadata") or {}
    if type == "DELETED":
        cache.drop(kind, meta.get("namespace") or "", meta.get("name") or "")
    else:
        cache.put({**body, "kind": kind})


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Register the ModelService handlers into ``registry``; they reconcile through ``ctx``."""
    cache, settings = ctx.cache, ctx.settings
    ctx = Context(ctx.kube, settings, cache, log)

    async def _sync(key: Key, force: bool) -> None:
        outcome = await reconcile.sync(ctx, key[0], key[1], force=force)
        if outcome.requeue_after is not None:
            queue.requeue_after(key, outcome.requeue_after)

    queue = WorkQueue(_sync)

    # One operator-wide resync loop rather than a kopf timer per object: kopf puts a finalizer
    # on every object that has a timer, and deleting a ModelService must not need the operator.
    tasks: list[asyncio.Task[None]] = []

    async def resync_forever() -> None:
        scopes: list[str | None] = [ns for ns in settings.namespaces if not any(c in ns for c in "*?![")]
        while True:
            await asyncio.sleep(settings.resync_period_s)
            try:
                for scope in scopes or [None]:
                    for item in await ctx.kube.list_objects(API_VERSION, "ModelService", scope):
                        meta = item["metadata"]
                        queue.kick((meta["namespace"], meta["name"]), force=True)
            except ApiException as exc:
                log.warning(f"resync: cannot list ModelServices: {exc.status} {exc.reason}")

    @kopf.on.startup(id="modelservice-resync-start", registry=registry)
    async def start_resync(**_: Any) -> None:
        tasks.append(asyncio.create_task(resync_forever()))

    @kopf.on.cleanup(id="modelservice-resync-stop", registry=registry)
    async def stop_resync(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        queue.shutdown()

    # Explicit ids: kopf names handlers by __qualname__ ("register.<locals>.f") otherwise, and an
    # index reaches handlers as a kwarg named by its id.
    @kopf.index(*MODELSERVICES, id="msvc_by_trainingjob", registry=registry)
    async def msvc_by_trainingjob(
        name: str, namespace: str | None, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], str] | None:
        ref = (spec.get("model") or {}).get("trainingJobRef") or {}
        return {(namespace or "", ref["name"]): name} if ref.get("name") else None

    def _owner(labels: Mapping[str, str], namespace: str | None) -> Key | None:
        owner = labels.get(LABEL_MODELSERVICE)
        return (namespace, owner) if owner and namespace else None

    @kopf.on.event(*MODELSERVICES, id="modelservice", registry=registry)
    async def modelservice_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        _remember(cache, type, body, "ModelService")
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if type == "DELETED":
            queue.forget(key)
            return
        # type None is the initial listing (the operator (re)started): re-apply every child, as on
        # resume. A generation the status has not observed yet is a spec change: re-apply too.
        observed = (body.get("status") or {}).get("observedGeneration")
        queue.kick(key, force=type is None or observed != meta.get("generation"))

    @kopf.on.event("apps", "v1", "deployments", id="modelservice-deployment", labels=OWNED, registry=registry)
    async def deployment_event(
        type: str | None, body: kopf.Body, labels: Mapping[str, str], namespace: str | None, **_: Any
    ) -> None:
        _remember(cache, type, body, "Deployment")
        key = _owner(labels, namespace)
        if key is not None:
            queue.kick(key, force=type == "DELETED")

    @kopf.on.event("batch", "v1", "jobs", id="modelservice-job", labels=OWNED, registry=registry)
    async def job_event(type: str | None, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        key = _owner(labels, namespace)
        if key is not None:
            queue.kick(key, force=type == "DELETED")

    # Pods: readiness reaches us through the Deployment's status and completion through the Job's;
    # a pod event matters only when it shows what those do not (a stuck or unready container).
    @kopf.on.event("", "v1", "pods", id="modelservice-pod", labels=OWNED, registry=registry)
    async def pod_event(
        type: str | None, body: kopf.Body, labels: Mapping[str, str], namespace: str | None, **_: Any
    ) -> None:
        _remember(cache, type, body, "Pod")
        key = _owner(labels, namespace)
        if key is None or type == "DELETED":
            return
        attention = pod_attention(body)
        if attention == "now":
            queue.kick(key)
        elif attention == "later":
            queue.kick(key, delay=settings.stuck_after_s + 1)

    @kopf.on.event(*TRAININGJOBS, id="modelservice-trainingjob", registry=registry)
    async def trainingjob_event(
        name: str,
        namespace: str | None,
        msvc_by_trainingjob: kopf.Index[tuple[str, str], str] | None = None,  # injected by kopf
        **_: Any,
    ) -> None:
        if namespace is None or msvc_by_trainingjob is None:
            return
        for msvc in msvc_by_trainingjob.get((namespace, name), []):
            queue.kick((namespace, msvc))
