"""What every workload pod gets from the operator's settings (storage credentials, default
requests, graceful drain, image pull secrets) and what status says about it (a failed gate's
drop, the training run's uid, a kubectl scale outside the HPA's range).

Pure builder tests first; the ``cluster`` tests at the end have the real kube-apiserver
validate what the builders produce (server-side dry-run) and exercise the CRD changes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kubemaas_operator.controllers.modelservice import artifact, compress, compression
from kubemaas_operator.controllers.modelservice import children as modelservice
from kubemaas_operator.controllers.modelservice.observe import (
    DeploymentHealth,
    replicas_outside_range,
    scale_writer,
)
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.controllers.modelservice.status import Observed, build_status
from kubemaas_operator.controllers.trainingjob import children as tjm
from kubemaas_operator.controllers.trainingjob.spec import parse_spec
from kubemaas_operator.settings import OperatorSettings
from tests.cluster.harness import ControlPlane
from tests.operator.support import OperatorProcess, condition, get_json, poll

OWNER: dict[str, Any] = {
    "apiVersion": "kubemaas.io/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
}
TJ_OWNER: dict[str, Any] = {
    "apiVersion": "kubemaas.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "train", "namespace": "ml", "uid": "tj-uid-1"},
}
BUNDLE = modelservice.ServingBundle(uri="s3://models/digits/v1", sha256="a" * 64)
PLAIN = OperatorSettings(serving_image="img:1", training_image="img:1")
HARDENED = OperatorSettings(
    serving_image="img:1", training_image="img:1", storage_secret_name="s3-creds", image_pull_secrets=["regcred", "mirror"]
)


def spec(**extra: Any) -> Any:
    model = {"uri": BUNDLE.uri, **extra.pop("model", {})}
    return parse_modelservice({"model": model, **extra})


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = obj["spec"]["template"]["spec"]
    return pod


def training_job(settings: OperatorSettings, **spec_fields: Any) -> dict[str, Any]:
    tspec = parse_spec({"recipe": {"name": "digits"}, **spec_fields})
    return tjm.build_job(
        TJ_OWNER, tspec, restarts=0, output="s3://models/train", image=settings.training_image,
        image_pull_policy=settings.image_pull_policy, run_as_user=settings.run_as_user,
        pvc_root=settings.pvc_root, active_deadline_seconds=None,
        storage_secret_name=settings.storage_secret_name, image_pull_secrets=settings.image_pull_secrets,
    )


# -- storage credentials ---------------------------------------------------------------------


def test_operator_storage_secret_is_optional_env_from_on_fetch_compress_and_train() -> None:
    ref = [{"secretRef": {"name": "s3-creds", "optional": True}}]
    dep = modelservice.deployment(OWNER, spec(), BUNDLE, HARDENED)
    (fetch,) = pod_of(dep)["initContainers"]
    (serve,) = pod_of(dep)["containers"]
    assert fetch["envFrom"] == ref
    assert "envFrom" not in serve  # the server reads a local directory: no credentials there
    job = compression.job(OWNER, spec(compression={"mode": "auto"}), BUNDLE.uri, "a" * 64, HARDENED)
    assert pod_of(job)["containers"][0]["envFrom"] == ref
    assert pod_of(training_job(HARDENED))["containers"][0]["envFrom"] == ref


def test_resource_storage_secret_overrides_and_is_required() -> None:
    own = spec(model={"storageSecretName": "team-a-s3"}, compression={"mode": "auto"})
    ref = [{"secretRef": {"name": "team-a-s3", "optional": False}}]
    assert pod_of(modelservice.deployment(OWNER, own, BUNDLE, HARDENED))["initContainers"][0]["envFrom"] == ref
    assert pod_of(compression.job(OWNER, own, BUNDLE.uri, "a" * 64, HARDENED))["containers"][0]["envFrom"] == ref
    trainer = pod_of(training_job(HARDENED, output={"storageSecretName": "team-a-s3"}))["containers"][0]
    assert trainer["envFrom"] == ref


def test_no_storage_secret_means_no_env_from() -> None:
    assert "envFrom" not in pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, PLAIN))["initContainers"][0]
    job = compression.job(OWNER, spec(compression={"mode": "auto"}), BUNDLE.uri, "a" * 64, PLAIN)
    assert "envFrom" not in pod_of(job)["containers"][0]
    assert "envFrom" not in pod_of(training_job(PLAIN))["containers"][0]


def test_changing_the_storage_secret_changes_the_spec_hash() -> None:
    def h(s: Any) -> str:
        return modelservice.spec_hash("digits", s, BUNDLE, PLAIN)

    assert h(spec()) == h(spec())
    assert h(spec(model={"storageSecretName": "a"})) != h(spec())


def test_settings_validate_secret_names() -> None:
    with pytest.raises(ValidationError, match="storage_secret_name"):
        OperatorSettings(storage_secret_name="Bad_Name")


# -- default requests for the HPA -------------------------------------------------------------


def resources_of(s: Any, settings: OperatorSettings = PLAIN) -> dict[str, Any]:
    out: dict[str, Any] = pod_of(modelservice.deployment(OWNER, s, BUNDLE, settings))["containers"][0]["resources"]
    return out


def test_serve_container_gets_default_requests_when_the_spec_has_none() -> None:
    scaled = spec(autoscaling={"maxReplicas": 4})
    assert resources_of(scaled) == {"requests": {"cpu": "250m", "memory": "256Mi"}}


def test_user_requests_and_limits_win_over_the_defaults() -> None:
    own = spec(runtime={"resources": {"requests": {"cpu": "1"}}})
    assert resources_of(own) == {"requests": {"cpu": "1", "memory": "256Mi"}}
    # A cpu limit alone: the API server defaults the request to the limit; 250m > 100m would be invalid.
    limited = spec(runtime={"resources": {"limits": {"cpu": "100m"}}})
    assert resources_of(limited) == {"requests": {"memory": "256Mi"}, "limits": {"cpu": "100m"}}


def test_empty_default_requests_are_left_out() -> None:
    off = OperatorSettings(default_cpu_request="", default_memory_request="")
    assert "resources" not in pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, off))["containers"][0]
    with pytest.raises(ValidationError, match="default_cpu_request"):
        OperatorSettings(default_cpu_request="lots")


# -- graceful rolling updates ----------------------------------------------------------------


def test_prestop_sleep_and_grace_period_cover_the_drain() -> None:
    pod = pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, PLAIN))
    serve = pod["containers"][0]
    assert serve["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert {"name": "KUBEMAAS_DRAIN_TIMEOUT_S", "value": "30"} in serve["env"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 5
    custom = OperatorSettings(prestop_sleep_s=0, drain_timeout_s=60)
    pod = pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, custom))
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 0 + 60 + 5


# -- a failed gate names the drop ------------------------------------------------------------


def gate_report(*drops: tuple[str, float | None]) -> str:
    return json.dumps({
        "selected": None, "reason": "gate", "bundle": None,
        "variants": [{"name": n, "accuracyDrop": d, "passed": False} for n, d in drops],
    })


def test_gate_reason_names_the_best_drop_and_the_budget() -> None:
    base = {"job": "j", "mode": "auto", "maxAccuracyDrop": 0.01, "sourceSha256": "a" * 64}
    result = compress.judge_report(
        base, "Failed", gate_report(("int8-dynamic", 0.0612), ("fp16", 0.042)), BUNDLE, 0.01
    )
    assert result.status is not None
    assert compression.gate_reason(result.status) == "AccuracyGateFailed: best drop 4.2pt (fp16) > 1pt"
    assert compression.gate_reason({"variants": [], "maxAccuracyDrop": 0.005}) == (
        "AccuracyGateFailed: no variant measured within 0.5pt"
    )
    assert [compression.points(x) for x in (0.0104, 0.01, 0.0)] == ["1.04pt", "1pt", "0pt"]


# -- lineage: the TrainingJob uid ------------------------------------------------------------


def test_status_model_source_carries_the_training_job_uid() -> None:
    tj = {"metadata": {"uid": "tj-uid-1"},
          "status": {"phase": "Succeeded", "artifact": {"uri": "s3://m/x", "sha256": "a" * 64}}}
    source = artifact.resolve_training_job("ml", "train", tj).bundle
    assert source is not None
    assert source.status()["source"] == {"kind": "TrainingJob", "namespace": "ml", "name": "train", "uid": "tj-uid-1"}
    served = compress.judge_report(
        {"job": "j"}, "Succeeded",
        json.dumps({"selected": "fp16", "bundle": {"uri": "s3://o/y", "sha256": "b" * 64},
                    "variants": [{"name": "fp16", "accuracyDrop": 0.0, "passed": True}]}),
        source, 0.01,
    ).serving
    assert served is not None
    assert served.source_uid == "tj-uid-1"
    dep = modelservice.deployment(OWNER, spec(), served, PLAIN)
    assert modelservice.serving_bundle_of(dep) == served  # survives an operator restart


# -- kubectl scale under an HPA --------------------------------------------------------------


def scaled_body(replicas: int, *, via_scale: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    if via_scale:
        entry["subresource"] = "scale"
    return {"metadata": {"managedFields": [entry]}, "spec": {"replicas": replicas}}


def test_a_scale_outside_the_autoscaling_range_is_explained() -> None:
    auto = {"minReplicas": 2, "maxReplicas": 4}
    assert scale_writer(scaled_body(5)) == "kubectl"
    assert replicas_outside_range(scaled_body(5), auto) == (
        "spec.replicas 5 (scaled by kubectl) is outside spec.autoscaling's range 2-4: "
        "the HorizontalPodAutoscaler scales it back within that range; change spec.autoscaling instead"
    )
    assert replicas_outside_range(scaled_body(1, via_scale=False), auto) == (  # e.g. replicas: 1 in a manifest
        "spec.replicas 1 is outside spec.autoscaling's range 2-4: "
        "the HorizontalPodAutoscaler scales it back within that range; change spec.autoscaling instead"
    )
    assert replicas_outside_range(scaled_body(5), None) is None  # no HPA: the scale is simply honoured
    assert replicas_outside_range(scaled_body(3), auto) is None  # within range: nothing to explain
    assert replicas_outside_range(scaled_body(0), auto) is None  # scaled to zero: the HPA stands aside


def test_scale_note_lands_in_available_and_message() -> None:
    note = "spec.replicas 5 (scaled by kubectl) is ignored"
    st = build_status(Observed(
        name="digits", namespace="ml", generation=1, old={}, spec=spec(autoscaling={"maxReplicas": 4}),
        artifact=artifact.resolve_training_job(
            "ml", "t", {"status": {"phase": "Succeeded", "artifact": {"uri": "s3://m/x", "sha256": "a" * 64}}}),
        comp=None, serving=BUNDLE, deployed=True, health=DeploymentHealth(2, 2, 2, 2, True, True, None),
        observed_replicas=2, scale_note=note,
    ), now="T")
    available = next(c for c in st["conditions"] if c["type"] == "Available")
    assert (st["phase"], st["reason"], st["message"]) == ("Ready", None, note)
    assert available["message"] == f"2/2 replicas available; {note}"


# -- image pull secrets ----------------------------------------------------------------------


def test_image_pull_secrets_on_every_workload_pod() -> None:
    want = [{"name": "regcred"}, {"name": "mirror"}]
    assert pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, HARDENED))["imagePullSecrets"] == want
    job = compression.job(OWNER, spec(compression={"mode": "auto"}), BUNDLE.uri, "a" * 64, HARDENED)
    assert pod_of(job)["imagePullSecrets"] == want
    assert pod_of(training_job(HARDENED))["imagePullSecrets"] == want
    assert "imagePullSecrets" not in pod_of(modelservice.deployment(OWNER, spec(), BUNDLE, PLAIN))


def test_image_pull_secrets_env_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMAAS_IMAGE_PULL_SECRETS", "regcred, mirror,")
    assert OperatorSettings().image_pull_secrets == ["regcred", "mirror"]


# -- against the real API server ----------------------------------------------------------------


def dry_run(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    proc = plane.kubectl("create", "--dry-run=server", "-o", "json", "-n", namespace, "-f", "-",
                         input=json.dumps(obj), check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.mark.cluster
def test_api_server_accepts_the_hardened_workloads(api_server: ControlPlane, namespace: str) -> None:
    scaled = spec(autoscaling={"maxReplicas": 3}, compression={"mode": "auto"})
    dep = dry_run(api_server, namespace, modelservice.deployment(OWNER, scaled, BUNDLE, HARDENED))
    serve = pod_of(dep)["containers"][0]
    assert serve["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert serve["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert pod_of(dep)["terminationGracePeriodSeconds"] == 40
    job = dry_run(api_server, namespace, compression.job(OWNER, scaled, BUNDLE.uri, "a" * 64, HARDENED))
    assert pod_of(job)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    train = dry_run(api_server, namespace, training_job(HARDENED))
    assert pod_of(train)["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": True}}]


MSVC = """apiVersion: kubemaas.io/v1alpha1
kind: ModelService
metadata: {name: scaled}
spec:
  model: {uri: 's3://models/x', storageSecretName: s3-creds}
  autoscaling: {minReplicas: 1, maxReplicas: 3}
"""


@pytest.mark.cluster
def test_crd_keeps_secret_uid_and_message_and_records_kubectl_scale(
    api_server: ControlPlane, namespace: str, shared_operator_paused: None
) -> None:
    """The API server keeps what the CRD declares; no operator runs, so the status set here stays."""
    api_server.kubectl("apply", "-n", namespace, "-f", "-", input=MSVC)
    status = {"status": {"reason": "AccuracyGateFailed: best drop 4.2pt (fp16) > 1pt", "message": "fp16 drop 0.0420",
                         "model": {"uri": "s3://x", "source": {"kind": "TrainingJob", "namespace": namespace,
                                                              "name": "t", "uid": "tj-uid-1"}}}}
    api_server.kubectl("patch", "msvc", "scaled", "-n", namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps(status))
    api_server.kubectl("scale", "msvc", "scaled", "-n", namespace, "--replicas=5")
    body = yaml.safe_load(api_server.kubectl("get", "msvc", "scaled", "-n", namespace, "-o", "yaml",
                                             "--show-managed-fields").stdout)
    assert body["spec"]["model"]["storageSecretName"] == "s3-creds"
    assert body["status"]["model"]["source"]["uid"] == "tj-uid-1"  # declared, so not pruned
    assert replicas_outside_range(body, body["spec"]["autoscaling"]) == (
        "spec.replicas 5 (scaled by kubectl) is outside spec.autoscaling's range 1-3: "
        "the HorizontalPodAutoscaler scales it back within that range; change spec.autoscaling instead"
    )
    wide = api_server.kubectl("get", "msvc", "scaled", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["AGE", "MESSAGE"]
    assert "AccuracyGateFailed: best drop 4.2pt (fp16) > 1pt" in wide[1]
    assert wide[1].rstrip().endswith("fp16 drop 0.0420")
    bad = api_server.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                             input=MSVC.replace("name: scaled", "name: bad").replace("s3-creds", "S3_Creds"))
    assert bad.returncode != 0
    assert "spec.model.storageSecretName" in bad.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_the_hpa_scales_the_modelservice_and_brings_a_scale_outside_its_range_back(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    """The real HPA controller (kube-controller-manager) scales the ModelService's scale subresource.

    There is no metrics API here, so the HPA acts only on its range (as Kubernetes' HPA does
    before it reads any metric): it raises spec.replicas 1 to minReplicas, and a `kubectl scale`
    above maxReplicas -- explained in status meanwhile -- comes back to maxReplicas. The operator
    sizes the Deployment from spec.replicas each time.
    """
    doc = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "auto"},
           "spec": {"model": {"uri": "s3://models/x"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    hpa = poll(lambda: get_json(control_plane, "hpa", "auto", "-n", namespace), what="the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService",
                                             "name": "auto"}

    def deployment_at(n: int) -> bool:
        deploy = get_json(control_plane, "deployment", "auto", "-n", namespace)
        return bool(deploy) and deploy["spec"]["replicas"] == n

    poll(lambda: deployment_at(2), timeout=90, what="the HPA raising spec.replicas 1 to minReplicas 2")
    body = get_json(control_plane, "msvc", "auto", "-n", namespace, "--show-managed-fields")
    assert body["spec"]["replicas"] == 2
    assert scale_writer(body) not in (None, "kubectl")  # written by the HPA through the scale subresource
    control_plane.kubectl("scale", "msvc", "auto", "-n", namespace, "--replicas=5")

    def noted() -> str | None:
        found = condition(get_json(control_plane, "msvc", "auto", "-n", namespace), "Available")
        message = str((found or {}).get("message") or "")
        return message if "spec.replicas 5 (scaled by kubectl) is outside" in message else None

    assert "the HorizontalPodAutoscaler scales it back within that range" in poll(
        noted, interval=0.2, what="the out-of-range note")
    poll(lambda: deployment_at(3), timeout=90, what="the HPA bringing spec.replicas 5 back to maxReplicas 3")
    assert get_json(control_plane, "msvc", "auto", "-n", namespace)["spec"]["replicas"] == 3
