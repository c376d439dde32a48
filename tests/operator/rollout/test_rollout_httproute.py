"""Canary weights on a Gateway API HTTPRoute (``spec.rollout.trafficRouting.httpRoute``), by the
real operator on the kwok tier.

The control plane is real and ``kubemaas operator`` runs as a subprocess; the HTTPRoute CRD is a
Gateway API subset (tests/operator/fixtures/httproute-crd.yaml) and no gateway controller runs,
so the weights are checked as writes to the HTTPRoute object, as the issue asks. Outcomes are
driven through the ``kubemaas.io/rollout`` annotation (kwok's pods serve no metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import ControlPlane
from tests.operator.rollout.test_rollout_operator import annotate, apply, deploy, msvc, rollout_in
from tests.operator.support import OperatorProcess, condition, get_json, poll

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROLLOUT = {"strategy": "Canary", "steps": [{"weight": 25, "hold": "1h"}, {"weight": 50, "hold": "1h"}],
           "trafficRouting": {"httpRoute": "m-route"}}


def route(plane: ControlPlane, ns: str) -> Any:
    return get_json(plane, "httproutes.gateway.networking.k8s.io", "m-route", "-n", ns)


def backends(plane: ControlPlane, ns: str) -> list[list[tuple[str, int, int]]]:
    rules = route(plane, ns)["spec"]["rules"]
    return [[(r["name"], r["port"], r["weight"]) for r in rule["backendRefs"]] for rule in rules]


def weights_become(plane: ControlPlane, ns: str, want: list[tuple[str, int, int]]) -> None:
    poll(lambda: backends(plane, ns)[0] == want, timeout=60, what=f"HTTPRoute m-route rule 0 backendRefs {want}")


def test_httproute_gets_exact_canary_weights_and_all_back_on_abort(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    control_plane.apply_crds(FIXTURES)
    user_route = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "m-route"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": [{"name": "m", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
             "backendRefs": [{"name": "other", "port": 8080}]},
        ]},
    }
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(user_route))
    apply(control_plane, ns, "s3://bucket/v1", ROLLOUT)
    rollout_in(control_plane, ns, "Stable")
    poll(lambda: condition(msvc(control_plane, ns), "Ready")["status"] == "True", timeout=60, what="v1 Ready")  # type: ignore[index]
    stable = deploy(control_plane, ns, "m")
    assert stable["spec"]["template"]["metadata"]["labels"]["kubemaas.io/track"] == "stable"
    weights_become(control_plane, ns, [("m", 80, 100)])  # no canary: everything to the ModelService's Service
    assert backends(control_plane, ns)[1] == [("other", 8080, 1)]  # another app's rule is left alone
    for name, track in (("m-stable", "stable"), ("m-canary", "canary")):
        svc = get_json(control_plane, "service", name, "-n", ns)
        assert svc["spec"]["selector"]["kubemaas.io/track"] == track
        assert svc["metadata"]["ownerReferences"][0]["name"] == "m"

    apply(control_plane, ns, "s3://bucket/v2", ROLLOUT)
    rollout_in(control_plane, ns, "Progressing")
    weights_become(control_plane, ns, [("m-stable", 80, 75), ("m-canary", 80, 25)])
    split = poll(lambda: (s := msvc(control_plane, ns)["status"]["rollout"].get("split"))
                 and s["effectiveWeight"] == 25.0 and s, timeout=30, what="status split at the exact weight")
    assert split["mode"] == "httpRoute m-route: exact weights, stable 75% / canary 25%"
    assert backends(control_plane, ns)[1] == [("other", 8080, 1)]

    annotate(control_plane, ns, "promote")  # step 1 -> 50 %
    weights_become(control_plane, ns, [("m-stable", 80, 50), ("m-canary", 80, 50)])

    annotate(control_plane, ns, "abort")
    rollout_in(control_plane, ns, "RolledBack")
    weights_become(control_plane, ns, [("m", 80, 100)])
    assert route(control_plane, ns)["spec"]["rules"][0]["matches"] == user_route["spec"]["rules"][0]["matches"]  # type: ignore[index]
