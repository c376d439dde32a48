"""Pure builders: ModelService spec + settings -> Deployment, Service, HPA, compression Job."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from kubemaas_operator.controllers.modelservice import children as modelservice
from kubemaas_operator.controllers.modelservice import compression
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.kube.manifests import ANNOTATION_SPEC_HASH, child_name
from kubemaas_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(serving_image="img:1", model_store_uri="pvc://store")
OWNER: dict[str, Any] = {
    "apiVersion": "kubemaas.io/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
}
BUNDLE = modelservice.ServingBundle(uri="pvc://models/digits/v1", sha256="a" * 64)


def spec(**extra: Any) -> Any:
    return parse_modelservice({"model": {"uri": BUNDLE.uri}, **extra})


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_deployment_runs_fetch_then_serve_with_contract_env() -> None:
    dep = modelservice.deployment(OWNER, spec(runtime={"maxBatchSize": 8, "maxDelayMs": 5, "threads": 2}), BUNDLE, SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["command"] + init["args"] == ["kubemaas", "fetch", "pvc://models/digits/v1", "/mnt/models"]
    assert main["command"] + main["args"] == ["kubemaas", "serve", "--model-dir", "/mnt/models"]
    assert main["image"] == init["image"] == "img:1"
    assert env(main) == {
        "KUBEMAAS_MODEL_DIR": "/mnt/models",
        "KUBEMAAS_MODEL_NAME": "digits",
        "KUBEMAAS_HOST": "0.0.0.0",
        "KUBEMAAS_PORT": "8080",
        "KUBEMAAS_MAX_BATCH_SIZE": "8",
        "KUBEMAAS_MAX_DELAY_MS": "5",
        "KUBEMAAS_MAX_QUEUE": "256",
        "KUBEMAAS_INTRA_OP_THREADS": "2",
        "KUBEMAAS_INTER_OP_THREADS": "1",
        "KUBEMAAS_DRAIN_TIMEOUT_S": "30",
    }
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["replicas"] == 1


def test_pvc_uri_mounts_the_claim_read_only_for_the_fetcher() -> None:
    dep = modelservice.deployment(OWNER, spec(), BUNDLE, SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    pvc = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert pvc == [{"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}]
    mounts = {m["mountPath"]: m for m in pod["initContainers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/models"]["readOnly"] is True


def test_every_container_is_locked_down() -> None:
    dep = modelservice.deployment(OWNER, spec(), BUNDLE, SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["capabilities"]) == (
            True, False, {"drop": ["ALL"]}
        )


def test_owner_reference_and_selector_labels() -> None:
    dep = modelservice.deployment(OWNER, spec(), BUNDLE, SETTINGS)
    assert dep["metadata"]["ownerReferences"] == [
        {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "name": "digits", "uid": "u-1",
         "controller": True, "blockOwnerDeletion": True}
    ]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert modelservice.selector("digits") == "app.kubernetes.io/component=predictor,kubemaas.io/modelservice=digits"


def test_spec_hash_changes_with_runtime_and_bundle_only() -> None:
    def h(s: Any, b: modelservice.ServingBundle = BUNDLE) -> str:
        return str(modelservice.deployment(OWNER, s, b, SETTINGS)["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH])

    base = h(spec())
    assert h(spec()) == base
    assert h(spec(replicas=5)) == base  # scaling does not roll pods
    assert h(spec(runtime={"maxBatchSize": 1})) != base
    assert h(spec(), modelservice.ServingBundle(uri=BUNDLE.uri, sha256="b" * 64)) != base


def test_resources_auth_and_extra_env() -> None:
    s = spec(runtime={"resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
                      "authSecretName": "tok", "env": [{"name": "FOO", "value": "1"}]})
    dep = modelservice.deployment(OWNER, s, BUNDLE, SETTINGS)
    main = dep["spec"]["template"]["spec"]["containers"][0]
    assert main["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    assert env(main)["KUBEMAAS_AUTH_TOKEN_FILE"] == "/var/run/secrets/kubemaas/auth/token"
    assert env(main)["FOO"] == "1"
    secret = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth"]
    assert secret[0]["secret"]["secretName"] == "tok"


def test_service_maps_port_80_to_the_runtime_port() -> None:
    svc = modelservice.service(OWNER, SETTINGS)
    assert svc["metadata"]["name"] == "digits"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_hpa_only_with_autoscaling_and_it_scales_the_modelservice_not_a_deployment() -> None:
    assert modelservice.hpa(OWNER, spec()) is None
    s = spec(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60})
    hpa = modelservice.hpa(OWNER, s)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService",
                                             "name": OWNER["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    # The operator sizes the Deployment: spec.replicas (which the HPA writes), or a canary split's share.
    assert modelservice.deployment(OWNER, s.model_copy(update={"replicas": 4}), BUNDLE, SETTINGS)["spec"]["replicas"] == 4
    assert modelservice.deployment(OWNER, s, BUNDLE, SETTINGS, replicas=3)["spec"]["replicas"] == 3


def test_serving_bundle_round_trips_through_deployment_annotations() -> None:
    bundle = modelservice.ServingBundle(
        uri="pvc://store/ml/digits/abc", sha256="c" * 64, variant="int8-static", size_bytes=1234,
        source_uri="pvc://models/x", source_sha256="d" * 64, source=("TrainingJob", "ml", "train"),
    )
    dep = modelservice.deployment(OWNER, spec(), bundle, SETTINGS)
    assert modelservice.serving_bundle_of(dep) == bundle


def test_compression_job_is_deterministic_and_reports_through_termination_log() -> None:
    s = spec(compression={"mode": "auto", "maxAccuracyDrop": 0.02})
    job = compression.job(OWNER, s, BUNDLE.uri, BUNDLE.sha256, SETTINGS)
    again = compression.job(OWNER, s, BUNDLE.uri, BUNDLE.sha256, SETTINGS)
    assert job == again
    name = job["metadata"]["name"]
    assert name.startswith("digits-compress-")
    assert len(name) == len("digits-compress-") + 8
    other = compression.job(OWNER, spec(compression={"mode": "auto", "maxAccuracyDrop": 0.03}), BUNDLE.uri,
                            BUNDLE.sha256, SETTINGS)
    assert other["metadata"]["name"] != name
    (c,) = job["spec"]["template"]["spec"]["containers"]
    out = f"pvc://store/ml/digits/{name.rsplit('-', 1)[1]}"
    assert c["args"] == ["compress", "--bundle", BUNDLE.uri, "--output", out, "--mode", "auto",
                         "--max-accuracy-drop", "0.02"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m.get("readOnly") for m in c["volumeMounts"]}
    assert mounts["/mnt/pvc/models"] is True
    assert mounts["/mnt/pvc/store"] is False
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_child_names_stay_within_63_characters() -> None:
    long = "m" * 63
    assert len(child_name(long, "compress-12345678")) == 63
    assert child_name(long, "compress-12345678").endswith("-compress-12345678")


def test_report_parsing_and_drop_listing() -> None:
    report = compression.parse_report(
        '{"selected": null, "reason": "gate", "bundle": null, "variants": ['
        '{"name": "int8-dynamic", "sizeBytes": 10, "accuracyDrop": 0.05, "passed": false},'
        '{"name": "fp16", "sizeBytes": 20, "accuracyDrop": 0.0, "passed": true, "extra": 1}]}'
    )
    assert report.drops() == "int8-dynamic drop 0.0500 (failed), fp16 drop 0.0000 (passed)"
    with pytest.raises(compression.ReportError, match="not JSON"):
        compression.parse_report("Traceback ...")


def test_bad_spec_is_a_permanent_error_naming_the_field() -> None:
    with pytest.raises(kopf.PermanentError, match=r"spec\.replicas"):
        parse_modelservice({"model": {"uri": "x"}, "replicas": -1})
    with pytest.raises(kopf.PermanentError, match="exactly one of uri or trainingJobRef"):
        parse_modelservice({"model": {"uri": "x", "trainingJobRef": {"name": "t"}}})
