"""LeanDiffBaseStorage computes kopf's own essence for tracked kinds, and none for the rest."""

from __future__ import annotations

import json
from typing import Any, cast

import kopf

from kubemaas_operator.handlers import CHANGE_TRACKED_GROUPS, STATE_PREFIX, LeanDiffBaseStorage

KEY = "last-handled-configuration"


def body(api_version: str, kind: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": "digits", "namespace": "ml", "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "labels": {"team": "ml"},
            "annotations": {
                "note": "kept",
                f"{STATE_PREFIX}/{KEY}": json.dumps({"spec": {"replicas": 1}}),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        },
        "spec": {"replicas": 2, "recipe": {"name": "digits", "epochs": 10}},
        "status": {"phase": "Running", "restarts": 0},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def test_tracked_kinds_get_exactly_kopfs_essence() -> None:
    lean = LeanDiffBaseStorage(tracked_groups=CHANGE_TRACKED_GROUPS, prefix=STATE_PREFIX, key=KEY)
    stock = kopf.AnnotationsDiffBaseStorage(prefix=STATE_PREFIX, key=KEY)
    tj = body("kubemaas.io/v1alpha1", "TrainingJob")
    essence = lean.build(body=tj, extra_fields=["spec"])
    assert essence == stock.build(body=tj, extra_fields=["spec"])
    assert essence == {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "kept"}},
        "spec": {"replicas": 2, "recipe": {"name": "digits", "epochs": 10}},
    }


def test_a_handler_on_a_status_field_still_sees_it() -> None:
    lean = LeanDiffBaseStorage(tracked_groups=CHANGE_TRACKED_GROUPS, prefix=STATE_PREFIX, key=KEY)
    essence = lean.build(body=body("kubemaas.io/v1alpha1", "TrainingJob"), extra_fields=["status.phase"])
    assert essence["status"] == {"phase": "Running"}


def test_untracked_kinds_get_an_empty_essence() -> None:
    lean = LeanDiffBaseStorage(tracked_groups=CHANGE_TRACKED_GROUPS, prefix=STATE_PREFIX, key=KEY)
    assert lean.build(body=body("v1", "Pod")) == {}
    assert lean.build(body=body("apps/v1", "Deployment")) == {}
