"""Which canary pods count: a third revision superseding a canary must not inherit the previous
canary's pods (their readiness or their traffic) while the canary Deployment rolls between them."""

from __future__ import annotations

from typing import Any

from kubemaas_operator.controllers.modelservice.canary import (
    _rolled_to,
    _status,
    canary_selector,
    rolled_out,
    scrape_targets,
    serves_split,
    stable_serving,
)
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.rollout.split import split_replicas
from kubemaas_operator.rollout.state import Revision, RolloutState

V2_HASH, V3_HASH = "hash-v2", "hash-v3"


def canary_deployment(status: dict[str, int], replicas: int = 1, generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "m-canary", "generation": generation,
                         "annotations": {"kubemaas.io/spec-hash": V3_HASH}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": generation, **status}}


def pod(name: str, *, track: str | None, spec_hash: str, ready: bool = True, ip: str = "10.0.0.1") -> dict[str, Any]:
    labels = {"kubemaas.io/modelservice": "m"} | ({"kubemaas.io/track": track} if track else {})
    return {"metadata": {"name": name, "labels": labels, "annotations": {"kubemaas.io/spec-hash": spec_hash}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_canary_rolling_to_the_next_revision_is_not_ready_while_old_pods_remain() -> None:
    # maxUnavailable 0, one replica: the v3 pod is created beside the still-Ready v2 pod.
    # updatedReplicas 1 (v3, not Ready), readyReplicas 1 (the v2 pod), replicas 2 (both).
    assert not rolled_out(canary_deployment({"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1}))
    # the v3 pod Ready, the v2 pod not yet gone
    assert not rolled_out(canary_deployment({"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2}))
    # the v2 pod gone: ready
    assert rolled_out(canary_deployment({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}))


def test_a_deployment_not_yet_observed_or_scaled_to_zero_is_not_ready() -> None:
    st = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    assert not rolled_out(canary_deployment({**st, "observedGeneration": 1}))
    assert not rolled_out(canary_deployment({"replicas": 0}, replicas=0))
    assert not rolled_out(None)


def test_only_canary_pods_of_the_current_template_are_scraped() -> None:
    pods = [
        pod("m-abc-1", track=None, spec_hash="hash-v1", ip="10.0.0.1"),
        pod("m-canary-old-1", track="canary", spec_hash=V2_HASH, ip="10.0.0.2"),   # previous canary revision
        pod("m-canary-new-1", track="canary", spec_hash=V3_HASH, ip="10.0.0.3"),
        pod("m-canary-new-2", track="canary", spec_hash=V3_HASH, ready=False, ip="10.0.0.4"),
    ]
    stable, canary = scrape_targets(pods, 8080, V3_HASH)
    assert stable == {"m-abc-1": "http://10.0.0.1:8080/metrics"}
    assert canary == {"m-canary-new-1": "http://10.0.0.3:8080/metrics"}


def test_the_prometheus_canary_selector_names_the_current_template_only() -> None:
    pods = [pod("m-canary-5d8f7-abcde", track="canary", spec_hash=V2_HASH),
            pod("m-canary-7c9b4-fghij", track="canary", spec_hash=V3_HASH)]
    pods[0]["metadata"]["labels"]["pod-template-hash"] = "5d8f7"
    pods[1]["metadata"]["labels"]["pod-template-hash"] = "7c9b4"
    # v2's pods (and another ModelService's, e.g. one named m-canary-x) are left out
    assert canary_selector("ml", "m-canary", pods, V3_HASH) == 'namespace="ml",pod=~"m-canary-7c9b4-[bcdfghjklmnpqrstvwxz2456789]{5}"'
    # before any pod of the current template exists: the Deployment's pods, whatever the template
    assert canary_selector("ml", "m-canary", pods[:1], V3_HASH) == (
        'namespace="ml",pod=~"m-canary-[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}"')


def test_route_weight_waits_for_the_canary_pods_this_step_wants() -> None:
    # Step 1 (25 % of 4): one canary pod, rolled out. Step 2 (50 %) wants two: until the second
    # pod is Ready, an exact route weight of 50 % would load one pod sized for 25 %.
    one_ready = canary_deployment({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1})
    want_two = {"metadata": {"annotations": {"kubemaas.io/spec-hash": V3_HASH}}, "spec": {"replicas": 2}}
    assert rolled_out(one_ready)
    assert not serves_split(one_ready, want_two)
    assert serves_split(one_ready, {**want_two, "spec": {"replicas": 1}})
    # a superseding revision's template: the Ready pods are the previous revision's
    other = {"metadata": {"annotations": {"kubemaas.io/spec-hash": "hash-v4"}}, "spec": {"replicas": 1}}
    assert not serves_split(one_ready, other)


def test_the_stable_deployment_never_falls_back_to_the_canary_bundle() -> None:
    v1 = Revision("a" * 64, "s3://m/v1", "none")
    v2 = ServingBundle(uri="s3://m/v2", sha256="b" * 64)
    running = ServingBundle(uri="s3://m/v1", sha256="a" * 64, task="text-generation")
    assert stable_serving(v1, v2, running) == running          # what the stable Deployment serves
    assert stable_serving(v1, v2, None) == ServingBundle(uri="s3://m/v1", sha256="a" * 64)  # it was deleted
    assert stable_serving(Revision("b" * 64, "s3://m/v2", "none"), v2, running) == v2  # promoted
    assert stable_serving(None, v2, None) == v2                # the first revision


def test_after_a_failed_promotion_stable_returns_to_the_previous_revision() -> None:
    # Rolled back to v1 while the stable Deployment's template still names the promoted v2.
    v1 = Revision("a" * 64, "s3://m/v1", "none")
    v2 = ServingBundle(uri="s3://m/v2", sha256="b" * 64, task="text-generation")
    assert stable_serving(v1, v2, v2) == ServingBundle(uri="s3://m/v1", sha256="a" * 64, task="text-generation")


def stable_deployment(replicas: int, status: dict[str, int]) -> dict[str, Any]:
    return {"metadata": {"name": "m", "generation": 3, "annotations": {
                "kubemaas.io/bundle-uri": "s3://m/v2", "kubemaas.io/bundle-sha256": "b" * 64, "kubemaas.io/variant": "none"}},
            "spec": {"replicas": replicas}, "status": {"observedGeneration": 3, **status}}


def test_a_promotion_at_zero_replicas_completes_once_the_template_is_seen() -> None:
    v2 = Revision("b" * 64, "s3://m/v2", "none")
    assert _rolled_to(stable_deployment(0, {}), v2)                       # nothing to wait for
    assert not _rolled_to(stable_deployment(0, {"replicas": 1}), v2)      # an old pod still going
    assert not _rolled_to(stable_deployment(2, {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}), v2)
    assert _rolled_to(stable_deployment(2, {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}), v2)


def test_status_weight_split_and_column_agree() -> None:
    state = RolloutState(phase="Progressing", stable=Revision("a" * 64), canary=Revision("b" * 64))
    rollout = _status(state, 20, split_replicas(2, 20))["rollout"]
    assert (rollout["weight"], rollout["split"]["effectiveWeight"], rollout["column"]) == (20, 50.0, "canary 20% (1/2 pods)")
    routed = _status(state, 20, split_replicas(2, 20), routed=20)["rollout"]
    assert routed["column"] == "canary 20%"
