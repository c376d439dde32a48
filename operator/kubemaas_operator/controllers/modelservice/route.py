"""Step 3a's traffic split through a Gateway API HTTPRoute (``spec.rollout.trafficRouting.httpRoute``).

While a canary is judged and both tracks are ready, the route's rules that send to this
ModelService get exact weights: ``<svc>-stable`` (stable pods only) at ``100 - w`` and
``<svc>-canary`` (canary pods only) at ``w``, where ``w`` is the step's weight, as Argo Rollouts'
Gateway API plugin sets them. Otherwise (no canary, a canary not yet Ready, stable pods not yet
labelled ``kubemaas.io/track: stable`` because their Deployment is still rolling to the label)
the rules send 100 % to the ModelService's own Service, so no weight ever points at a backend
without ready pods. The route itself is the user's (or the platform's): the operator only reads
it and patches its ``backendRefs``; a missing route (or no Gateway API in the cluster) leaves the
split by pod count and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import children
from kubemaas_operator.rollout.children import (
    CANARY,
    HTTPROUTE_API,
    LABEL_TRACK,
    STABLE,
    canary_name,
    canary_service,
    route_backends,
    route_weights,
    stable_name,
    stable_service,
)


@dataclass(frozen=True)
class RouteResult:
    """The weight the route now gives the canary (None: the route could not be used) and why."""

    weight: int | None
    note: str


def stable_labelled(deploy: Mapping[str, Any] | None) -> bool:
    """Every pod of the stable Deployment carries ``kubemaas.io/track: stable`` (the template has the
    label and the Deployment has rolled out to it), so ``<svc>-stable`` selects all of them."""
    if not deploy:
        return False
    spec, st, meta = deploy.get("spec") or {}, deploy.get("status") or {}, deploy.get("metadata") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    want = int(spec.get("replicas", 1))
    return (labels.get(LABEL_TRACK) == STABLE
            and int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and int(st.get("updatedReplicas") or 0) >= want and int(st.get("readyReplicas") or 0) >= want
            and int(st.get("replicas") or 0) == want)


def weight_to_route(step_weight: int, canary_ready: bool, stable_ready: bool) -> int:
    """Pure: the canary's weight on the route: the step's once both tracks are ready, else 0."""
    return step_weight if step_weight > 0 and canary_ready and stable_ready else 0


async def _ensure_service(ctx: Context, want: dict[str, Any]) -> None:
    meta = want["metadata"]
    have = await ctx.kube.get("v1", "Service", meta["namespace"], meta["name"])
    if have is None or (have.get("spec") or {}).get("selector") != want["spec"]["selector"] or [
            (p.get("port"), p.get("targetPort")) for p in (have.get("spec") or {}).get("ports") or []] != [
            (p.get("port"), p.get("targetPort")) for p in want["spec"]["ports"]]:
        await ctx.kube.apply(want)


async def set_route_weights(
    ctx: Context, msvc: Mapping[str, Any], route_name: str, weight: int,
) -> RouteResult:
    """Apply the stable and canary Services and patch the HTTPRoute ``route_name`` so the canary gets
    ``weight`` percent (0: everything to the ModelService's Service). Raises ApiException on API errors."""
    namespace = msvc["metadata"]["namespace"]
    main = children.service(msvc, ctx.settings)
    main_name = main["metadata"]["name"]
    for svc in (stable_service(main), canary_service(main)):
        await _ensure_service(ctx, svc)
    route = await ctx.kube.get(HTTPROUTE_API, "HTTPRoute", namespace, route_name)
    if route is None:
        return RouteResult(None, f"HTTPRoute {route_name} not found (or no Gateway API in the cluster): "
                                 "traffic follows the pod count behind the one Service")
    port = ctx.settings.service_port
    if weight > 0:
        want = route_weights(route, stable_name(main_name), canary_name(main_name), weight, port, also=(main_name,))
    else:
        want = route_weights(route, main_name, canary_name(main_name), 0, port, also=(stable_name(main_name),))
    if not _sends_to_us(route, main_name):
        return RouteResult(None, f"HTTPRoute {route_name} has no rule with a backendRef to Service {main_name}: "
                                 "traffic follows the pod count behind the one Service")
    if route_backends(want) != route_backends(route):  # write only a change (the server adds group/kind)
        await ctx.kube.merge_patch(HTTPROUTE_API, "HTTPRoute", namespace, route_name,
                                   {"spec": {"rules": want["spec"]["rules"]}})
    return RouteResult(weight, _note(route_name, weight))


def _sends_to_us(route: Mapping[str, Any], main_name: str) -> bool:
    ours = {main_name, stable_name(main_name), canary_name(main_name)}
    return any(name in ours for rule in route_backends(route) for name, _, _ in rule)


def _note(route_name: str, weight: int) -> str:
    if weight == 0:
        return (f"httpRoute {route_name}: 100% to the ModelService's Service (traffic follows the pod count) "
                "until the canary and stable pods are ready")
    return f"httpRoute {route_name}: exact weights, stable {100 - weight}% / {CANARY} {weight}%"
