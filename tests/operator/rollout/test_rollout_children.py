"""The canary's Deployment, Service and HTTPRoute weights, derived from the stable children."""

from __future__ import annotations

from typing import Any

from kubemaas_operator.rollout.children import canary_deployment, canary_name, canary_service, route_weights

MATCH = {"kubemaas.io/modelservice": "digits", "app.kubernetes.io/component": "predictor"}


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "digits", "namespace": "ml", "labels": dict(MATCH)},
        "spec": {"replicas": 4, "selector": {"matchLabels": dict(MATCH)},
                 "template": {"metadata": {"labels": {**MATCH, "app.kubernetes.io/name": "kubemaas"}}, "spec": {}}},
    }


def test_canary_deployment_is_told_apart_by_one_label_and_stays_behind_the_service() -> None:
    built = deployment()
    canary = canary_deployment(built, replicas=1)
    assert canary["metadata"]["name"] == "digits-canary"
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["selector"] == {"matchLabels": {**MATCH, "kubemaas.io/track": "canary"}}
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["kubemaas.io/track"] == "canary"
    assert MATCH.items() <= pod_labels.items()  # the Service's selector still matches canary pods
    assert built == deployment()  # the input is not modified


def test_long_names_stay_dns_labels() -> None:
    name = canary_name("m" * 63)
    assert (len(name), name.endswith("-canary")) == (63, True)


def test_canary_service_selects_canary_pods_only() -> None:
    stable = {"metadata": {"name": "digits"}, "spec": {"selector": dict(MATCH), "ports": [{"port": 80}]}}
    svc = canary_service(stable)
    assert (svc["metadata"]["name"], svc["spec"]["selector"]) == ("digits-canary", {**MATCH, "kubemaas.io/track": "canary"})


def test_route_weights_are_exact_and_leave_other_backends_alone() -> None:
    route = {"spec": {"rules": [
        {"matches": [{"path": {"value": "/v2"}}], "backendRefs": [{"name": "digits", "port": 80}]},
        {"backendRefs": [{"name": "other", "port": 8080}]},
    ]}}
    out = route_weights(route, "digits", "digits-canary", 20, 80)
    assert out["spec"]["rules"][0]["backendRefs"] == [{"name": "digits", "port": 80, "weight": 80},
                                                      {"name": "digits-canary", "port": 80, "weight": 20}]
    assert out["spec"]["rules"][1] == route["spec"]["rules"][1]
    back = route_weights(out, "digits", "digits-canary", 0, 80)
    assert back["spec"]["rules"][0]["backendRefs"] == [{"name": "digits", "port": 80, "weight": 100}]
