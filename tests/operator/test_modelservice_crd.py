"""The ModelService CRD against a real kube-apiserver: schema, CEL rules, printer columns."""

from __future__ import annotations

import pytest

from tests.cluster.harness import ControlPlane

pytestmark = pytest.mark.cluster

DOC = """apiVersion: kubemaas.io/v1alpha1
kind: ModelService
metadata: {{name: {name}}}
spec:
{spec}
"""


def apply(plane: ControlPlane, namespace: str, name: str, spec: str) -> tuple[int, str]:
    proc = plane.kubectl("apply", "-n", namespace, "-f", "-", input=DOC.format(name=name, spec=spec), check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ("  model: {uri: pvc://m/x, trainingJobRef: {name: t}}", "spec.model",
         "exactly one of spec.model.uri or spec.model.trainingJobRef must be set"),
        ("  model: {}", "spec.model", "exactly one of spec.model.uri or spec.model.trainingJobRef must be set"),
        ("  model: {uri: pvc://m/x}\n  autoscaling: {minReplicas: 5, maxReplicas: 2}", "spec.autoscaling",
         "spec.autoscaling.minReplicas must be <= spec.autoscaling.maxReplicas"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: auto, maxAccuracyDrop: 1.5}",
         "spec.compression.maxAccuracyDrop", "must be in [0, 1]"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: auto, maxAccuracyDrop: -0.1}",
         "spec.compression.maxAccuracyDrop", "must be in [0, 1]"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: int2}", "spec.compression.mode",
         'Unsupported value: "int2"'),
        ("  model: {uri: pvc://m/x}\n  replicas: -1", "spec.replicas", "greater than or equal to 0"),
        ("  model: {uri: pvc://m/x}\n  runtime: {maxBatchSize: 0}", "spec.runtime.maxBatchSize",
         "greater than or equal to 1"),
        ("  model: {uri: 'ftp://host/x'}", "spec.model.uri", "should match"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: int8-static, methods: [quantize, prune]}",
         "spec.compression", "only mode auto compares"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: auto, methods: [shrink]}",
         "spec.compression.methods[0]", 'Unsupported value: "shrink"'),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: auto, methods: [prune, prune]}",
         "spec.compression.methods[1]", "Duplicate value"),
        ("  model: {uri: pvc://m/x}\n  compression: {mode: auto, methods: []}",
         "spec.compression.methods", "should have at least 1 items"),
    ],
    ids=["both-sources", "no-source", "min-gt-max", "drop-above-1", "drop-below-0", "bad-mode",
         "negative-replicas", "zero-batch", "bad-uri-scheme", "students-need-auto", "unknown-method",
         "method-twice", "no-methods"],
)
def test_invalid_specs_are_rejected_naming_the_field(
    api_server: ControlPlane, namespace: str, spec: str, field: str, says: str
) -> None:
    code, out = apply(api_server, namespace, "bad", spec)
    assert code != 0, out
    assert field in out, out
    assert says in out, out


def test_defaults_are_filled_in_and_columns_print(api_server: ControlPlane, namespace: str) -> None:
    code, out = apply(api_server, namespace, "ok", "  model: {trainingJobRef: {name: train}}")
    assert code == 0, out
    got = api_server.kubectl("get", "msvc", "ok", "-n", namespace, "-o", "jsonpath={.spec}").stdout
    assert '"compression":{"maxAccuracyDrop":0.01,"methods":["quantize"],"mode":"none"}' in got
    assert '"replicas":1' in got
    header = api_server.kubectl("get", "modelservices", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "URL", "VARIANT", "ROLLOUT", "REPLICAS", "REASON", "TASK", "PERPLEXITY",
                      "TOKENS/S", "AGE"]
    names = api_server.kubectl("get", "kubemaas", "-n", namespace, "-o", "name").stdout
    assert "modelservice.kubemaas.io/ok" in names
