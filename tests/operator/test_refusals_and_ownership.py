"""Pure readings behind the operator's refusals: who controls a child, who owns a field, how
many replicas the HPA takes over, which Job Event is a pod-creation refusal, what an API error says."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubemaas_operator.controllers.modelservice.artifact import resolve_training_job
from kubemaas_operator.controllers.modelservice.rollout import refused
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.controllers.modelservice.status import Observed, build_status, retrying_status
from kubemaas_operator.controllers.trainingjob import children
from kubemaas_operator.controllers.trainingjob.reconcile import _stale_shape
from kubemaas_operator.controllers.trainingjob.spec import parse_spec
from kubemaas_operator.kube.client import api_message
from kubemaas_operator.kube.events import event_body
from kubemaas_operator.kube.observe import Problem, refusal
from kubemaas_operator.kube.ownership import conflict, field_owners, foreign_controller


def owned_by(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": [
        {"kind": "Other", "name": "x", "uid": "u-other", "controller": False},
        {"kind": kind, "name": name, "uid": uid, "controller": True},
    ]}}


def test_foreign_controller_names_another_resources_controller_only() -> None:
    assert foreign_controller(owned_by("TrainingJob", "fraud", "u-tj"), "u-msvc") == "TrainingJob/fraud"
    assert foreign_controller(owned_by("ModelService", "m", "u-msvc"), "u-msvc") is None
    assert foreign_controller({"metadata": {}}, "u-msvc") is None
    assert foreign_controller(None, "u-msvc") is None


def test_field_owners_reads_managed_fields_of_the_main_resource() -> None:
    deploy = {"metadata": {"managedFields": [
        {"manager": "kubemaas-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}},
    ]}}
    assert field_owners(deploy, ("spec", "replicas")) == ["kubemaas-operator"]
    assert field_owners(deploy, ("spec", "template")) == []


def test_only_warning_failed_create_events_are_refusals_and_the_newest_wins() -> None:
    def event(reason: str, message: str, stamp: str, type_: str = "Warning") -> dict[str, Any]:
        return {"type": type_, "reason": reason, "message": message, "lastTimestamp": stamp,
                "involvedObject": {"kind": "Job", "name": "tj-r0"}}

    events = [
        event("SuccessfulCreate", "Created pod", "2026-01-01T00:00:03Z", "Normal"),
        event("FailedCreate", "pods is forbidden: exceeded quota: q, requested: pods=1", "2026-01-01T00:00:02Z"),
        event("FailedCreate", "pods is forbidden: exceeded quota: q, requested: pods=2", "2026-01-01T00:00:01Z"),
    ]
    assert refusal(events) == Problem("FailedCreate", "Job tj-r0: pods is forbidden: exceeded quota: q, requested: pods=1")
    assert refusal(events[:1]) is None


def test_a_refused_child_carries_the_api_servers_own_message() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps({"kind": "Status", "message": 'Deployment.apps "m" is invalid: spec...: must be less'})
    cond = refused({"kind": "Deployment", "metadata": {"name": "m"}}, exc)
    assert (cond.type, cond.status, cond.reason) == ("Ready", "False", "ChildRefused")
    assert cond.message == ('the API server refused Deployment m: 422 Deployment.apps "m" is invalid: '
                            "spec...: must be less")
    assert api_message(ApiException(status=503, reason="Service Unavailable")) == "Service Unavailable"


def test_an_event_names_its_object_and_our_component() -> None:
    tj = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "TrainingJob",
          "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1", "resourceVersion": "7"}}
    body = event_body(tj, "Warning", "RankFailed", "rank 1 failed")
    assert body["involvedObject"] == {"apiVersion": "kubemaas.io/v1alpha1", "kind": "TrainingJob", "name": "digits",
                                      "namespace": "ml", "uid": "u-1", "resourceVersion": "7"}
    assert (body["type"], body["reason"], body["message"], body["source"]) == (
        "Warning", "RankFailed", "rank 1 failed", {"component": "kubemaas-operator"})
    assert body["metadata"] == {"generateName": "digits.", "namespace": "ml"}


def test_only_a_suspended_job_of_another_gang_shape_is_replaced() -> None:
    edited = parse_spec({"recipe": {"name": "digits"}, "replicas": 3})
    old_shape = parse_spec({"recipe": {"name": "digits"}, "replicas": 2}).shape_hash()

    def job(shape: str | None, suspend: bool) -> dict[str, Any]:
        annotations = {children.ANNOTATION_SHAPE: shape} if shape else {}
        return {"metadata": {"name": "tj-r0", "annotations": annotations}, "spec": {"suspend": suspend}}

    assert _stale_shape(job(old_shape, True), edited) is True
    assert _stale_shape(job(old_shape, False), edited) is False  # a running gang is never swapped
    assert _stale_shape(job(edited.shape_hash(), True), edited) is False
    assert _stale_shape(job(None, True), edited) is False  # a Job from before the annotation: left alone
    suspended = parse_spec({"recipe": {"name": "digits"}, "replicas": 3, "runPolicy": {"suspend": True}})
    assert edited.shape_hash() == suspended.shape_hash()  # suspending is not a change of shape


def test_a_conflict_fails_the_modelservice_and_a_transient_error_keeps_its_phase() -> None:
    child = {"kind": "Service", "metadata": {"name": "fraud-workers", "namespace": "ml"}}
    st = build_status(Observed(
        name="fraud-workers", namespace="ml", generation=1, old={}, spec=parse_modelservice({"model": {"uri": "x"}}),
        artifact=resolve_training_job("ml", "t", {"status": {"phase": "Succeeded",
                                                             "artifact": {"uri": "s3://b/m", "sha256": "a" * 64}}}),
        blocked=conflict(child, "TrainingJob/fraud"),
    ), now="T")
    assert (st["phase"], st["reason"]) == ("Failed", "Conflict")
    assert st["message"].startswith("Service ml/fraud-workers is controlled by TrainingJob/fraud")
    old = {"phase": "RollingOut", "conditions": [{"type": "ArtifactReady", "status": "True", "reason": "URIGiven",
                                                  "message": "", "lastTransitionTime": "T0"}]}
    retry = retrying_status(old, 2, "API error 429: slow down; retrying with back-off")
    assert "phase" not in retry
    assert (retry["reason"], [c["type"] for c in retry["conditions"]]) == ("RetryingAPIError", ["ArtifactReady", "Ready"])
    assert retry["conditions"][0]["lastTransitionTime"] == "T0"
