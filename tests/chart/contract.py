"""Contract 7, transcribed: the exact API permissions the operator uses.

The Helm chart's RBAC must grant these and nothing else; the chart tests compare the
rendered rules with this list and ask the real API server's RBAC authorizer about every
entry. Change it only together with /work/shared contracts (and report the change).
"""

from __future__ import annotations

from typing import NamedTuple


class Permission(NamedTuple):
    group: str  # "" is the core group
    resource: str  # may carry a subresource: "pods/log"
    verb: str


def _expand(group: str, resources: tuple[str, ...], verbs: str) -> set[Permission]:
    return {Permission(group, r, v) for r in resources for v in verbs.split()}


NAMESPACED: frozenset[Permission] = frozenset(
    _expand("kubemaas.io", ("modelservices", "trainingjobs"), "get list watch patch update")
    | _expand("kubemaas.io", ("modelservices/status", "trainingjobs/status"), "get patch update")
    | _expand("apps", ("deployments",), "get list watch create patch update delete")
    | _expand("", ("services",), "get list watch create patch update delete")
    | _expand("", ("pods",), "get list watch delete")
    | _expand("", ("pods/log",), "get")
    | _expand("batch", ("jobs",), "get list watch create patch update delete")
    | _expand("autoscaling", ("horizontalpodautoscalers",), "get list watch create patch update delete")
    | _expand("", ("events",), "get list create patch")  # list: FailedCreate of a Job (pod refusals)
    | _expand("events.k8s.io", ("events",), "create patch")
    | _expand("gateway.networking.k8s.io", ("httproutes",), "get patch")  # canary weights (spec.rollout.trafficRouting)
)
"""Permissions on namespaced resources: a Role in watchNamespace mode."""

CLUSTER: frozenset[Permission] = frozenset(
    _expand("apiextensions.k8s.io", ("customresourcedefinitions",), "get list watch")
    | _expand("", ("namespaces",), "get list watch")
)
"""Cluster-scoped reads kopf needs (always a ClusterRole)."""

ALL: frozenset[Permission] = NAMESPACED | CLUSTER

DENIED: tuple[Permission, ...] = (
    Permission("", "secrets", "list"),
    Permission("", "secrets", "get"),
    Permission("", "configmaps", "create"),
    Permission("", "pods", "create"),
    Permission("", "pods/exec", "create"),
    Permission("kubemaas.io", "modelservices", "delete"),
    Permission("kubemaas.io", "trainingjobs", "create"),
    Permission("apiextensions.k8s.io", "customresourcedefinitions", "create"),
    Permission("rbac.authorization.k8s.io", "clusterroles", "bind"),
    Permission("", "namespaces", "delete"),
)
"""Things the operator must NOT be able to do (a sample of what contract 7 leaves out)."""
