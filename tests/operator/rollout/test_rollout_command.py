"""A ``kubemaas.io/rollout`` command survives an API error in the middle of the sync that acts on it,
and acts once.

The control plane is real (etcd, kube-apiserver, controllers, kwok) and so is the operator's
code: ``sync`` runs in this process with the real API client. The shared operator process is
paused so it does not reconcile the ModelService meanwhile. The one stand-in is the fault: a
real API server cannot be told to fail one particular write, so a subclass of the real client
raises a 500 on that call once (and otherwise passes every call through).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes.config import kube_config

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice.reconcile import sync
from kubemaas_operator.kube.client import ApiException, Kube
from kubemaas_operator.rollout.analysis import Analyses
from kubemaas_operator.settings import OperatorSettings
from tests.cluster.harness import ControlPlane
from tests.operator.support import get_json

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROLLOUT = {"strategy": "Canary", "steps": [{"weight": 25, "hold": "1h"}, {"weight": 50, "hold": "1h"},
                                           {"weight": 75, "hold": "1h"}]}


class FailingOnce(Kube):
    """The real client, but the next status write (``fail="status"``) or the next merge patch of a
    ModelService (``fail="annotation"``) answers 500 once."""

    fail = ""

    async def patch_status(self, api_version: str, kind: str, namespace: str | None, name: str,
                           status: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.fail == "status":
            self.fail = ""
            raise ApiException(status=500, reason="injected: etcd leader changed")
        return await super().patch_status(api_version, kind, namespace, name, status)

    async def merge_patch(self, api_version: str, kind: str, namespace: str | None, name: str,
                          body: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.fail == "annotation" and kind == "ModelService":
            self.fail = ""
            raise ApiException(status=500, reason="injected: etcd leader changed")
        return await super().merge_patch(api_version, kind, namespace, name, body)


def apply(plane: ControlPlane, ns: str, uri: str) -> None:
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "m"},
           "spec": {"model": {"uri": uri}, "replicas": 4, "rollout": ROLLOUT}}
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def once(kube: Kube, analyses: Analyses, ns: str) -> None:
    """One sync with a fresh cache (no watches feed it here, so every read goes to the API)."""
    asyncio.run(sync(Context(kube, OperatorSettings(), analyses=analyses), ns, "m"))


def rollout(plane: ControlPlane, ns: str) -> tuple[dict[str, Any], str | None]:
    obj = get_json(plane, "modelservice", "m", "-n", ns) or {}
    return ((obj.get("status") or {}).get("rollout") or {},
            ((obj.get("metadata") or {}).get("annotations") or {}).get("kubemaas.io/rollout"))


def test_a_command_is_neither_lost_nor_applied_twice_when_a_write_fails(
    control_plane: ControlPlane, namespace: str, shared_operator_paused: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = namespace
    monkeypatch.setenv("KUBEMAAS_SERVING_IMAGE", "kubemaas/kubemaas:test")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # the client reads KUBECONFIG when it is imported, so the control plane's file is set where it looks
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(control_plane.kubeconfig))
    kube, analyses = FailingOnce(), Analyses()
    apply(control_plane, ns, "s3://bucket/v1")
    once(kube, analyses, ns)
    assert rollout(control_plane, ns)[0]["phase"] == "Stable"
    apply(control_plane, ns, "s3://bucket/v2")
    once(kube, analyses, ns)
    assert (rollout(control_plane, ns)[0]["phase"], rollout(control_plane, ns)[0]["step"]) == ("Progressing", 0)

    # The status write that records "promote" fails: the command must still be there to act on.
    control_plane.kubectl("annotate", "msvc", "m", "-n", ns, "kubemaas.io/rollout=promote")
    kube.fail = "status"
    with pytest.raises(ApiException):
        once(kube, analyses, ns)
    state, annotation = rollout(control_plane, ns)
    assert (state["step"], annotation) == (0, "promote")
    once(kube, analyses, ns)
    state, annotation = rollout(control_plane, ns)
    assert (state["step"], state["commandApplied"], annotation) == (1, "promote", None)
    once(kube, analyses, ns)  # the sync the annotation's removal triggers clears the mark
    assert rollout(control_plane, ns)[0].get("commandApplied") is None

    # The status is written but removing the annotation fails: the next sync must not promote again.
    control_plane.kubectl("annotate", "msvc", "m", "-n", ns, "kubemaas.io/rollout=promote")
    kube.fail = "annotation"
    with pytest.raises(ApiException):
        once(kube, analyses, ns)
    state, annotation = rollout(control_plane, ns)
    assert (state["step"], state["commandApplied"], annotation) == (2, "promote", "promote")
    once(kube, analyses, ns)
    state, annotation = rollout(control_plane, ns)
    assert (state["step"], annotation) == (2, None)
    once(kube, analyses, ns)  # the sync the annotation's removal triggers clears the mark
    assert rollout(control_plane, ns)[0].get("commandApplied") is None
