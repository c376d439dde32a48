"""Kubernetes Events on our custom resources (what ``kubectl describe`` shows), posted through
the operator's own client.

Why not ``kopf.event()``: it works only inside a task kopf runs for a handler (it reads kopf's
settings and per-object event queue from context variables and raises LookupError anywhere
else), so it cannot serve a work-queue worker or a timer; the TrainingJob code wrapped it in a
broad ``except`` that hid such failures, and the ModelService controller posted no Events at
all. Events here are core/v1 Events, as KServe's and Kubeflow's controllers record them (reason
CamelCase, message one sentence), posted on transitions only, so a periodic resync repeats none.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Literal

from kubemaas_operator.kube.client import ApiException, Kube, api_message
from kubemaas_operator.kube.manifests import MANAGED_BY
from kubemaas_operator.kube.observe import Problem, refusal

log = logging.getLogger("kubemaas.events")

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024


def event_body(
    obj: Mapping[str, Any], type_: EventType, reason: str, message: str, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (a custom resource body with apiVersion, kind and metadata)."""
    meta = obj["metadata"]
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": MANAGED_BY,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def record(kube: Kube, obj: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
    """Post an Event about ``obj``; a refusal is logged as a warning (never fails the caller)."""
    try:
        await kube.create(event_body(obj, type_, reason, message))
    except ApiException as exc:
        log.warning("could not record Event %s on %s/%s: %s %s", reason, obj["metadata"].get("namespace"),
                    obj["metadata"].get("name"), exc.status, api_message(exc))


async def child_refusal(kube: Kube, kind: str, namespace: str, name: str) -> Problem | None:
    """Why a child's controller cannot create its pods (e.g. ``FailedCreate`` ... exceeded quota),
    from the child's Events -- the Job controller reports this only as Events. None when none."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    events = await kube.list_objects("v1", "Event", namespace, field_selector=selector)
    return refusal(events)
