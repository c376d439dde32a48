"""HTTPRoute traffic routing, pure: the spec, the stable track label, the weight on the route and
the backendRefs it writes."""

from __future__ import annotations

from typing import Any

import pytest

from kubemaas_operator.controllers.modelservice import children
from kubemaas_operator.controllers.modelservice.route import stable_labelled, weight_to_route
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.rollout.children import (
    canary_deployment,
    http_route_of,
    route_backends,
    route_weights,
    stable_name,
    stable_service,
)
from kubemaas_operator.rollout.spec import RolloutSpecError, parse_rollout
from kubemaas_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(model_store_uri="pvc://store")
BUNDLE = children.ServingBundle(uri="s3://b/m", sha256="")


def owner(rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"uri": "s3://b/m"}}
    if rollout is not None:
        spec["rollout"] = rollout
    return {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService",
            "metadata": {"name": "digits", "namespace": "ns", "uid": "u"}, "spec": spec}


def test_traffic_routing_is_parsed_and_read_from_the_body() -> None:
    routed = {"strategy": "Canary", "trafficRouting": {"httpRoute": "web"}}
    assert parse_rollout(routed).traffic_routing.http_route == "web"
    assert parse_rollout(None).traffic_routing.http_route is None
    assert (http_route_of(owner(routed)), http_route_of(owner())) == ("web", None)
    with pytest.raises(RolloutSpecError, match=r"spec\.rollout\.trafficRouting\.httpRoute"):
        parse_rollout({"trafficRouting": {"httpRoute": 3}})


def test_only_a_routed_modelservice_labels_its_stable_pods_and_the_canary_overrides_it() -> None:
    spec = parse_modelservice(owner()["spec"])
    plain = children.deployment(owner(), spec, BUNDLE, SETTINGS)
    routed = children.deployment(owner({"trafficRouting": {"httpRoute": "web"}}), spec, BUNDLE, SETTINGS)
    assert "kubemaas.io/track" not in plain["spec"]["template"]["metadata"]["labels"]
    assert routed["spec"]["template"]["metadata"]["labels"]["kubemaas.io/track"] == "stable"
    assert routed["spec"]["selector"] == plain["spec"]["selector"]  # immutable: never changed
    canary = canary_deployment(routed, 1)
    assert canary["spec"]["template"]["metadata"]["labels"]["kubemaas.io/track"] == "canary"


def test_stable_service_selects_stable_pods_only() -> None:
    main = children.service(owner(), SETTINGS)
    svc = stable_service(main)
    assert svc["metadata"]["name"] == "digits-stable"
    assert svc["spec"]["selector"] == {**main["spec"]["selector"], "kubemaas.io/track": "stable"}
    assert (len(stable_name("m" * 63)), stable_name("m" * 63).endswith("-stable")) == (63, True)


@pytest.mark.parametrize(("step", "canary_ready", "stable_ready", "weight"), [
    (25, True, True, 25), (25, False, True, 0), (25, True, False, 0), (0, True, True, 0)])
def test_the_route_weight_waits_for_both_tracks(step: int, canary_ready: bool, stable_ready: bool, weight: int) -> None:
    assert weight_to_route(step, canary_ready, stable_ready) == weight


def rolled(labels: dict[str, str], updated: int = 3, ready: int = 3, replicas: int = 3) -> dict[str, Any]:
    return {"metadata": {"generation": 2},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": labels}}},
            "status": {"observedGeneration": 2, "updatedReplicas": updated, "readyReplicas": ready,
                       "replicas": replicas}}


def test_stable_counts_as_labelled_only_once_every_pod_has_the_label() -> None:
    track = {"kubemaas.io/track": "stable"}
    assert stable_labelled(rolled(track))
    assert not stable_labelled(rolled({}))
    assert not stable_labelled(rolled(track, updated=2))  # still rolling to the labelled template
    assert not stable_labelled(rolled(track, replicas=4))  # an old, unlabelled pod still runs
    assert not stable_labelled(None)


def test_route_weights_move_the_users_service_ref_to_the_tracks_and_back() -> None:
    route = {"spec": {"rules": [
        {"backendRefs": [{"name": "digits", "port": 80, "group": "", "kind": "Service", "weight": 1}]},
        {"backendRefs": [{"name": "other", "port": 8080}]},
    ]}}
    split = route_weights(route, "digits-stable", "digits-canary", 25, 80, also=("digits",))
    assert route_backends(split) == [[("digits-stable", 80, 75), ("digits-canary", 80, 25)],
                                     [("other", 8080, None)]]
    back = route_weights(split, "digits", "digits-canary", 0, 80, also=("digits-stable",))
    assert route_backends(back) == [[("digits", 80, 100)], [("other", 8080, None)]]
    assert route_backends(route_weights(route, "x-stable", "x-canary", 25, 80, also=("x",))) == route_backends(route)
