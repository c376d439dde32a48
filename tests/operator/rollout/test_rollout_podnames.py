"""Prometheus selectors find the pods of ModelServices with long names: the API server cuts a
``generateName`` base to 58 characters, so ``<deployment>-<hash>-<suffix>`` does not hold there."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from kubemaas_operator.controllers.modelservice.canary import canary_selector, stable_selector
from kubemaas_operator.rollout.analysis import _window
from kubemaas_operator.rollout.children import canary_name
from kubemaas_operator.rollout.podnames import pod_name, pod_name_pattern
from kubemaas_operator.rollout.samples import Snapshot
from kubemaas_operator.rollout.scrape import PrometheusSource, ScrapeError

SAFE = "bcdfghjklmnpqrstvwxz2456789"
"""The alphabet of pod-template-hash values and of the 5 random characters (k8s.io/apimachinery
rand), written out here rather than imported so a wrong constant in the code would show."""


def names(rng: random.Random, deployment: str, template_hash: str, count: int = 3) -> list[str]:
    """Pod names as the ReplicaSet controller and the API server's name generator make them."""
    return [pod_name(f"{deployment}-{template_hash}", "".join(rng.choices(SAFE, k=5))) for _ in range(count)]


def canary_pod(name: str, template_hash: str, spec_hash: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubemaas.io/track": "canary", "pod-template-hash": template_hash},
                         "annotations": {"kubemaas.io/spec-hash": spec_hash}}}


def matchers(selector: str) -> list[tuple[str, str]]:
    return re.findall(r'pod(=~|!~)"([^"]+)"', selector)


def selects(selector: str, pod: str) -> bool:
    """PromQL's label matchers on ``pod``: regular expressions anchored at both ends, all must hold."""
    return all((re.fullmatch(rx, pod) is not None) == (op == "=~") for op, rx in matchers(selector))


def test_a_long_name_cuts_the_base_at_58_characters() -> None:
    deployment = "digits-classifier-retrained-on-the-full-training-set-v2"  # 55 characters
    assert pod_name(f"{deployment}-7d4f9c6b8", "x2k9p") == f"{deployment}-7d" + "x2k9p"
    assert len(pod_name(f"{deployment}-7d4f9c6b8", "x2k9p")) == 63
    with pytest.raises(ValueError, match="suffix: expected 5 characters, got 'ab'"):
        pod_name("m-1", "ab")


@pytest.mark.parametrize("length", range(1, 64))
def test_selectors_match_the_pods_kubernetes_names_at_every_length(length: int) -> None:
    rng = random.Random(length)
    stable_deploy = ("m" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-", k=max(0, length - 2))) + "z")[:length]
    canary_deploy = canary_name(stable_deploy)
    hashes = ["".join(rng.choices(SAFE, k=k)) for k in (10, 9, 10)]
    stable_pods = names(rng, stable_deploy, hashes[0]) + names(rng, stable_deploy, hashes[1])
    old_canary, new_canary = names(rng, canary_deploy, hashes[1]), names(rng, canary_deploy, hashes[2])
    current = [canary_pod(n, hashes[2], "v3") for n in new_canary]

    seen = [{"metadata": {"name": n, "labels": {}}} for n in stable_pods] + current
    stable = stable_selector("ml", stable_deploy, seen)
    canary = canary_selector("ml", canary_deploy, current, "v3")
    seen_canary = [canary_pod(n, hashes[1], "v2") for n in old_canary]
    any_canary = canary_selector("ml", canary_deploy, seen_canary, "v3")  # no pod of v3's template yet
    assert [selects(stable, p) for p in stable_pods] == [True] * 6
    assert [selects(stable, p) for p in old_canary + new_canary] == [False] * 6
    assert [selects(canary, p) for p in new_canary] == [True] * 3
    assert [selects(canary, p) for p in stable_pods + old_canary] == [False] * 9
    if length >= 56:  # stable and canary names alike: nothing named, no canary traffic read
        assert any_canary == ""
    else:             # the Deployment's pods, whatever the template
        assert [selects(any_canary, p) for p in old_canary + new_canary] == [True] * 6
        assert [selects(any_canary, p) for p in stable_pods] == [False] * 6


def test_another_deployment_whose_name_extends_ours_is_not_selected() -> None:
    rng = random.Random(7)
    theirs = names(rng, "m-canary-x", "5d8f7b9c4d")                # a ModelService named m-canary-x
    assert not any(re.fullmatch(pod_name_pattern("m-canary"), p) for p in theirs)
    assert re.fullmatch(pod_name_pattern("m-canary"), names(rng, "m-canary", "5d8f7b9c4d")[0])


def test_the_patterns_need_no_backslashes_in_a_promql_string() -> None:
    assert "\\" not in pod_name_pattern("model.v2-" + "x" * 60) + pod_name_pattern("a.b", ["5d8f7"])
    assert re.fullmatch(pod_name_pattern("a.b"), "a.b-5d8f7-x2k9p")
    assert not re.fullmatch(pod_name_pattern("a.b"), "axb-5d8f7-x2k9p")


def test_no_nameable_pods_read_no_traffic_instead_of_querying_every_pod() -> None:
    """A real PrometheusSource aimed at a closed port: a query would raise ScrapeError."""
    closed = PrometheusSource("http://127.0.0.1:9", timeout_s=0.5)
    assert _window(closed, "", 15) == Snapshot()
    with pytest.raises(ScrapeError):
        _window(closed, 'namespace="ml",pod=~"m-x"', 15)
