"""TrainingJob handlers: thin entry points into ``reconcile.sync`` through the work queue.

- every watch event of a TrainingJob (the initial listing at startup included): kick it;
- events of owned Jobs and pods (label ``kubemaas.io/trainingjob``): kick the owner;
- a sync that asks for another one later (a TTL falling due, a Conflict to re-check) gets one
  ``requeue_after`` timer.

Watching handlers, as for ModelServices: ``sync`` is level-based, so kopf's change handlers and
their diff-base annotations would add a write per change and nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.trainingjob import reconcile
from kubemaas_operator.kube.manifests import GROUP, LABEL_TRAININGJOB, VERSION
from kubemaas_operator.kube.workqueue import Key, WorkQueue

log = logging.getLogger("kubemaas.trainingjob")


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Register the TrainingJob handlers into ``registry``; they reconcile through ``ctx``."""
    ctx = Context(ctx.kube, ctx.settings, ctx.cache, log)

    async def _sync(key: Key, force: bool) -> None:
        again = await reconcile.sync(ctx, key[0], key[1])
        if again is not None:
            queue.requeue_after(key, again)

    queue = WorkQueue(_sync)
    owned = {LABEL_TRAININGJOB: kopf.PRESENT}

    @kopf.on.event(GROUP, VERSION, "trainingjobs", id="trainingjob", registry=registry)
    async def trainingjob_event(type: str | None, name: str, namespace: str | None, **_: Any) -> None:
        key = (namespace or "", name)
        if type == "DELETED":
            queue.forget(key)
        else:
            queue.kick(key)

    @kopf.on.event("batch", "v1", "jobs", labels=owned, id="trainingjob-job", registry=registry)
    async def job_event(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
        queue.kick((namespace or "", labels[LABEL_TRAININGJOB]))

    @kopf.on.event("", "v1", "pods", labels=owned, id="trainingjob-pod", registry=registry)
    async def pod_event(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
        queue.kick((namespace or "", labels[LABEL_TRAININGJOB]))

    @kopf.on.cleanup(id="trainingjob-stop", registry=registry)
    async def stop(**_: Any) -> None:
        queue.shutdown()
