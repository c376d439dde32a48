"""The serving pod's model-volume sizeLimit: the spec's, else from the bundle's recorded size, else 10Gi. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubemaas_operator.controllers.modelservice import children as modelservice
from kubemaas_operator.controllers.modelservice import compression as jobs
from kubemaas_operator.controllers.modelservice.artifact import resolve_training_job
from kubemaas_operator.controllers.modelservice.compress import from_status, judge_report
from kubemaas_operator.controllers.modelservice.spec import Storage, parse_modelservice
from kubemaas_operator.controllers.modelservice.storage import derived_size_limit, model_size_limit
from kubemaas_operator.kube.manifests import stable_hash
from kubemaas_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(serving_image="img:1", model_store_uri="pvc://store")
OWNER: dict[str, Any] = {
    "apiVersion": "kubemaas.io/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
}
GIB, MIB = 1 << 30, 1 << 20
SHA = "a" * 64


def spec(**extra: Any) -> Any:
    return parse_modelservice({"model": {"uri": "s3://b/digits"}, **extra})


def model_volume(deploy: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"]
    return dict(volume["emptyDir"])


def test_derived_limit_is_twice_the_bundle_plus_1gi_rounded_up_to_mib() -> None:
    assert derived_size_limit(300 * MIB) == f"{2 * 300 + 1024}Mi"
    assert derived_size_limit(0) == "1024Mi"
    assert derived_size_limit(1) == "1025Mi"  # 2 bytes + 1 GiB rounds up to the next MiB
    assert derived_size_limit(20 * GIB) == f"{(2 * 20 + 1) * 1024}Mi"  # above the 10Gi default


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="bundle size must be >= 0 bytes, got -1"):
        derived_size_limit(-1)


@pytest.mark.parametrize(("limit", "size", "expected"), [
    ("20Gi", 300 * MIB, "20Gi"),  # the spec wins over the recorded size
    ("20Gi", None, "20Gi"),
    (None, 300 * MIB, "1624Mi"),
    (None, None, "10Gi"),
])
def test_precedence(limit: str | None, size: int | None, expected: str) -> None:
    assert model_size_limit(Storage(sizeLimit=limit), size) == expected


def test_the_deployment_sizes_the_model_volume_from_the_bundle() -> None:
    bundle = modelservice.ServingBundle(uri="s3://b/digits", sha256=SHA, bundle_bytes=3 * GIB)
    assert model_volume(modelservice.deployment(OWNER, spec(), bundle, SETTINGS)) == {"sizeLimit": f"{7 * 1024}Mi"}
    explicit = spec(storage={"sizeLimit": "4Gi"})
    assert model_volume(modelservice.deployment(OWNER, explicit, bundle, SETTINGS)) == {"sizeLimit": "4Gi"}
    unknown = modelservice.ServingBundle(uri="s3://b/digits", sha256=SHA)
    assert model_volume(modelservice.deployment(OWNER, spec(), unknown, SETTINGS)) == {"sizeLimit": "10Gi"}


def test_a_new_size_rolls_the_pods_but_an_unknown_one_keeps_the_old_hash() -> None:
    """A Deployment made before sizes were recorded (its ModelService persisted the CRD's old
    default, 10Gi) keeps the hash it had: the default limit never entered the hash."""
    unknown = modelservice.ServingBundle(uri="s3://b/digits", sha256=SHA)
    before = stable_hash({
        "name": "digits", "bundle": ["s3://b/digits", SHA, "none"],
        "runtime": spec().runtime.model_dump(mode="json", by_alias=True), "image": "img:1", "port": 8080,
    })
    assert modelservice.spec_hash("digits", spec(storage={"sizeLimit": "10Gi"}), unknown, SETTINGS) == before
    assert modelservice.spec_hash("digits", spec(), unknown, SETTINGS) == before
    sized = modelservice.ServingBundle(uri="s3://b/digits", sha256=SHA, bundle_bytes=GIB)
    assert modelservice.spec_hash("digits", spec(), sized, SETTINGS) != before
    assert modelservice.spec_hash("digits", spec(storage={"sizeLimit": "10Gi"}), sized, SETTINGS) == before


def test_the_size_survives_in_the_deployment_annotations() -> None:
    """A Deployment re-rendered from what it serves (no fresh compression result) keeps its limit."""
    bundle = modelservice.ServingBundle(uri="s3://b/digits", sha256=SHA, bundle_bytes=5 * GIB)
    deploy = modelservice.deployment(OWNER, spec(), bundle, SETTINGS)
    assert deploy["metadata"]["annotations"][modelservice.ANNOTATION_BUNDLE_BYTES] == str(5 * GIB)
    again = modelservice.serving_bundle_of(deploy)
    assert again == bundle
    assert modelservice.deployment(OWNER, spec(), again, SETTINGS) == deploy


def test_a_training_artifact_carries_its_size() -> None:
    tj: dict[str, Any] = {"metadata": {"uid": "t-1"}, "status": {"phase": "Succeeded", "artifact": {
        "uri": "s3://b/run", "sha256": SHA, "metrics": {}, "sizeBytes": 123_456_789}}}
    resolution = resolve_training_job("ml", "run", tj)
    assert resolution.bundle is not None
    assert resolution.bundle.bundle_bytes == 123_456_789
    del tj["status"]["artifact"]["sizeBytes"]  # a trainer image from before sizes were reported
    resolution = resolve_training_job("ml", "run", tj)
    assert resolution.bundle is not None
    assert resolution.bundle.bundle_bytes is None


def test_a_compression_report_carries_the_compressed_bundle_size_through_status() -> None:
    source = modelservice.ServingBundle(uri="s3://b/run", sha256=SHA, bundle_bytes=9 * GIB)
    message = json.dumps({
        "selected": "int8-dynamic", "reason": "smallest",
        "bundle": {"uri": "s3://b/run-c", "sha256": "b" * 64, "sizeBytes": 2 * GIB},
        "variants": [{"name": "int8-dynamic", "sizeBytes": GIB, "accuracyDrop": 0.0, "passed": True}],
    })
    fresh = judge_report({"job": "digits-compress-1"}, "Succeeded", message, source, 0.01)
    assert fresh.serving is not None
    assert fresh.serving.bundle_bytes == 2 * GIB
    assert fresh.status is not None
    assert fresh.status["bundle"] == {"uri": "s3://b/run-c", "sha256": "b" * 64, "sizeBytes": 2 * GIB}
    recorded = from_status(fresh.status, source, 0.01)  # the next sync reads status.compression back
    assert recorded.serving == fresh.serving


def test_a_report_without_a_size_leaves_it_unknown() -> None:
    report = jobs.parse_report(json.dumps({"selected": "fp16", "bundle": {"uri": "u", "sha256": SHA}}))
    assert report.bundle is not None
    assert report.bundle.size_bytes is None
    assert report.status()["bundle"] == {"uri": "u", "sha256": SHA}


def test_a_negative_report_size_is_refused() -> None:
    with pytest.raises(jobs.ReportError, match="greater than or equal to 0"):
        jobs.parse_report(json.dumps({"selected": "fp16", "bundle": {"uri": "u", "sha256": SHA, "sizeBytes": -5}}))
