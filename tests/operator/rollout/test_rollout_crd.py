"""spec.rollout in the ModelService CRD against a real kube-apiserver: CEL rules and defaults."""

from __future__ import annotations

import json

import pytest

from tests.cluster.harness import ControlPlane

pytestmark = pytest.mark.cluster

DOC = """apiVersion: kubemaas.io/v1alpha1
kind: ModelService
metadata: {{name: {name}}}
spec:
  model: {{uri: pvc://m/x}}
  rollout: {rollout}
"""


def apply(plane: ControlPlane, namespace: str, name: str, rollout: str) -> tuple[int, str]:
    doc = DOC.format(name=name, rollout=rollout)
    proc = plane.kubectl("apply", "-n", namespace, "-f", "-", input=doc, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("rollout", "field", "says"),
    [
        ("{strategy: Canary, steps: [{weight: 0}]}", "spec.rollout.steps[0].weight", "greater than or equal to 1"),
        ("{strategy: Canary, steps: [{weight: 100}]}", "spec.rollout.steps[0].weight", "less than or equal to 99"),
        ("{strategy: Canary, steps: [{weight: 50}, {weight: 20}]}", "spec.rollout.steps",
         "weights must strictly increase"),
        ("{strategy: Canary, steps: [{weight: 20}, {weight: 20}]}", "spec.rollout.steps",
         "weights must strictly increase"),
        ("{strategy: Canary, steps: [{weight: 20, hold: 5min}]}", "spec.rollout.steps[0].hold", "should match"),
        ("{strategy: BlueGreen}", "spec.rollout.strategy", 'Unsupported value: "BlueGreen"'),
        ("{analysis: {maxErrorRate: 2}}", "spec.rollout.analysis.maxErrorRate", "less than or equal to 1"),
        ("{analysis: {prometheusUrl: 'ftp://p'}}", "spec.rollout.analysis.prometheusUrl", "should match"),
        ("{analysis: {interval: 0s}}", "spec.rollout.analysis.interval", "must be longer than 0"),
        ("{analysis: {interval: 0.0ms}}", "spec.rollout.analysis.interval", "must be longer than 0"),
        ("{analysis: {inconclusiveLimit: 0m0s}}", "spec.rollout.analysis.inconclusiveLimit", "must be longer than 0"),
        ("{analysis: {interval: 10m}}", "spec.rollout.analysis", "inconclusiveLimit must be at least the interval"),
    ],
    ids=["weight-0", "weight-100", "decreasing", "repeated", "bad-hold", "bad-strategy", "error-rate", "prom-url",
         "interval-0", "interval-0ms", "inconclusive-limit-0", "limit-below-interval"],
)
def test_nonsense_rollouts_are_rejected_naming_the_field(
    api_server: ControlPlane, namespace: str, rollout: str, field: str, says: str
) -> None:
    code, out = apply(api_server, namespace, "bad", rollout)
    assert code != 0, out
    assert field in out, out
    assert says in out, out


def test_odd_but_valid_durations_are_accepted(api_server: ControlPlane, namespace: str) -> None:
    rollout = ("{strategy: Canary, steps: [{weight: 99, hold: 0s}], "
               "analysis: {interval: 1m30s, latencyTolerance: 0s, inconclusiveLimit: 2h}}")
    code, out = apply(api_server, namespace, "durations", rollout)
    assert code == 0, out


def test_canary_defaults_are_filled_in(api_server: ControlPlane, namespace: str) -> None:
    code, out = apply(api_server, namespace, "canary", "{strategy: Canary, steps: [{weight: 10, hold: 1m}, {weight: 60}]}")
    assert code == 0, out
    got = json.loads(api_server.kubectl("get", "msvc", "canary", "-n", namespace, "-o", "jsonpath={.spec.rollout}").stdout)
    assert got == {
        "strategy": "Canary",
        "steps": [{"weight": 10, "hold": "1m"}, {"weight": 60}],
        "analysis": {"interval": "15s", "minRequests": 20, "maxErrorRate": 0.01, "maxLatencyRatio": 2,
                     "latencyTolerance": "5ms", "inconclusiveLimit": "5m"},
    }
