"""The canary's child objects, derived from the stable ones (pure functions over manifests).

The canary Deployment is the serving Deployment the ModelService controller builds for the
canary's bundle, renamed ``<name>-canary`` and told apart by one more label,
``kubemaas.io/track: canary``, in its selector and pod template. Its pods keep every label of
the Service's selector, so the one Service spreads traffic over stable and canary pods alike
(per pod, no mesh). The stable Deployment's selector is immutable and does not name the
track, so it also matches canary pods; ownership is by controller reference (the ReplicaSet
controller only adopts orphans), which is what keeps the two apart, as with Argo Rollouts'
stable and canary ReplicaSets behind one selector.

An HTTPRoute (Gateway API), when the ModelService names one (``spec.rollout.trafficRouting.httpRoute``),
gets exact weights on two backendRefs instead: a ``<name>-stable`` Service that selects only
stable pods (their Deployment then labels them ``kubemaas.io/track: stable``) and a
``<name>-canary`` Service that selects only canary pods, as Argo Rollouts' Gateway API plugin
and Flagger's gatewayapi provider do with their stable and canary Services.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

LABEL_TRACK = "kubemaas.io/track"
"""``canary`` on canary pods (stable pods carry no track label: their Deployment predates it)."""
CANARY = "canary"
STABLE = "stable"
SUFFIX = "-canary"
STABLE_SUFFIX = "-stable"
HTTPROUTE_API = "gateway.networking.k8s.io/v1"


def canary_name(stable_name: str) -> str:
    """``<stable>-canary``, cut so the result stays a DNS label (63 characters)."""
    return stable_name[: 63 - len(SUFFIX)].rstrip("-") + SUFFIX


def stable_name(service: str) -> str:
    """``<service>-stable``, cut so the result stays a DNS label (63 characters)."""
    return service[: 63 - len(STABLE_SUFFIX)].rstrip("-") + STABLE_SUFFIX


def http_route_of(msvc: Mapping[str, Any]) -> str | None:
    """``spec.rollout.trafficRouting.httpRoute`` of a ModelService body, or None."""
    routing = (((msvc.get("spec") or {}).get("rollout") or {}).get("trafficRouting")) or {}
    name = routing.get("httpRoute") if isinstance(routing, Mapping) else None
    return str(name) if name else None


def canary_deployment(built: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The canary Deployment from the one built for the canary bundle, with ``replicas`` pods.

    ``built`` is a serving Deployment manifest (apps/v1) as the ModelService controller makes
    it for the canary's bundle; it is not modified.
    """
    deploy = copy.deepcopy(dict(built))
    meta = deploy["metadata"]
    meta["name"] = canary_name(meta["name"])
    meta.setdefault("labels", {})[LABEL_TRACK] = CANARY
    spec = deploy["spec"]
    spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": {**spec["selector"]["matchLabels"], LABEL_TRACK: CANARY}}
    spec["template"]["metadata"].setdefault("labels", {})[LABEL_TRACK] = CANARY
    return deploy


def canary_service(stable: Mapping[str, Any]) -> dict[str, Any]:
    """A Service for the canary pods only (an HTTPRoute backendRef), from the stable Service."""
    svc = copy.deepcopy(dict(stable))
    svc["metadata"]["name"] = canary_name(svc["metadata"]["name"])
    svc["spec"]["selector"] = {**svc["spec"]["selector"], LABEL_TRACK: CANARY}
    return svc


def stable_service(main: Mapping[str, Any]) -> dict[str, Any]:
    """A Service for the stable pods only (an HTTPRoute backendRef), from the ModelService's Service."""
    svc = copy.deepcopy(dict(main))
    svc["metadata"]["name"] = stable_name(svc["metadata"]["name"])
    svc["spec"]["selector"] = {**svc["spec"]["selector"], LABEL_TRACK: STABLE}
    return svc


def route_weights(route: Mapping[str, Any], stable_service: str, canary_service_name: str,
                  weight: int, port: int, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """``route`` (a gateway.networking.k8s.io HTTPRoute) with every rule's backendRefs set to
    the stable Service at ``100 - weight`` and the canary Service at ``weight``.

    Rules that send to none of the stable Service, the canary Service and the names in ``also``
    (e.g. the ModelService's own Service, which a user's route names) are left alone, and so are
    their other backends; weight 0 drops the canary ref.
    """
    ours = (stable_service, canary_service_name, *also)
    out = copy.deepcopy(dict(route))
    for rule in out.get("spec", {}).get("rules", []) or []:
        refs = rule.get("backendRefs") or []
        if not any(r.get("name") in ours for r in refs):
            continue
        others = [r for r in refs if r.get("name") not in ours]
        mine = [{"name": stable_service, "port": port, "weight": 100 - weight}]
        if weight > 0:
            mine.append({"name": canary_service_name, "port": port, "weight": weight})
        rule["backendRefs"] = [*others, *mine]
    return out


def route_backends(route: Mapping[str, Any] | None) -> list[list[tuple[str, int | None, int | None]]]:
    """(name, port, weight) of every rule's backendRefs: what ``route_weights`` sets, without the
    fields the API server defaults (group, kind), to tell whether a write is needed."""
    rules = ((route or {}).get("spec") or {}).get("rules") or []
    return [[(str(r.get("name")), r.get("port"), r.get("weight")) for r in rule.get("backendRefs") or []]
            for rule in rules]
