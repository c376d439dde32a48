"""Pure tests of the TrainingJob manifest builder (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemaas_operator.controllers.trainingjob import children as mf
from kubemaas_operator.controllers.trainingjob import spec as tjspec

REPO = Path(__file__).resolve().parents[2]
RANK_REF = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}


def owner(name: str = "digits") -> dict[str, Any]:
    return {
        "apiVersion": "kubemaas.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1"},
    }


def build(spec: dict[str, Any], restarts: int = 0, output: str = "pvc://kubemaas-models/digits") -> dict[str, Any]:
    return mf.build_job(
        owner(), tjspec.parse_spec(spec), restarts=restarts, output=output, image="kubemaas/kubemaas:test",
        image_pull_policy="IfNotPresent", run_as_user=10001, pvc_root="/mnt/pvc", active_deadline_seconds=None,
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def example_spec() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "trainingjob.yaml").read_text())["spec"])


def test_example_job_is_an_indexed_gang_without_job_level_retries() -> None:
    job = build(example_spec(), restarts=0)
    spec = job["spec"]
    assert job["metadata"]["name"] == "digits-r0"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 0
    assert spec["suspend"] is False
    assert "ttlSecondsAfterFinished" not in spec
    pod = spec["template"]["spec"]
    assert (pod["restartPolicy"], pod["subdomain"]) == ("Never", "digits-workers")
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "kubemaas.io/v1alpha1", "kind": "TrainingJob", "name": "digits", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }]


def test_example_env_contract_both_forms() -> None:
    env = env_of(build(example_spec(), restarts=3))
    assert {k: v for k, v in env.items() if k not in ("HOME", "PYTHONUNBUFFERED")} == {
        "MASTER_ADDR": "digits-r3-0.digits-workers",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "2",
        "RANK": RANK_REF,
        "PET_MASTER_ADDR": "digits-r3-0.digits-workers",
        "PET_MASTER_PORT": "23456",
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "1",
        "PET_NODE_RANK": RANK_REF,
        "KUBEMAAS_BACKEND": "gloo",
        "KUBEMAAS_SOURCE_NAMESPACE": "ml",
        "KUBEMAAS_SOURCE_NAME": "digits",
        "KUBEMAAS_SOURCE_UID": "uid-1",
        "KUBEMAAS_TERMINATION_LOG": "/dev/termination-log",
        "KUBEMAAS_PVC_ROOT": "/mnt/pvc",
    }


def test_recipe_command_and_termination_message() -> None:
    c = container(build(example_spec()))
    assert c["command"] == [
        "kubemaas", "train", "--recipe", "digits", "--output", "pvc://kubemaas-models/digits", "--name", "digits",
        "--epochs", "10", "--batch-size", "64", "--lr", "0.01", "--seed", "0",
    ]
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "/dev/termination-log", "FallbackToLogsOnError",
    )
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def test_pvc_output_is_mounted_under_the_pvc_root() -> None:
    job = build(example_spec())
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/mnt/pvc/kubemaas-models"]]["persistentVolumeClaim"] == {
        "claimName": "kubemaas-models", "readOnly": False,
    }


def test_torchrun_reads_pet_env_when_several_procs_per_node() -> None:
    job = build({"replicas": 3, "procsPerNode": 4, "recipe": {"name": "sequence"}}, output="s3://b/p")
    env = env_of(job)
    assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("12", "3", "4")
    assert container(job)["command"] == [
        "torchrun", "--no-python", "--max-restarts=0",
        "kubemaas", "train", "--recipe", "sequence", "--output", "s3://b/p", "--name", "digits",
    ]
    assert "KUBEMAAS_PVC_ROOT" not in env


def test_user_command_image_and_pod_overrides() -> None:
    spec = {
        "replicas": 2, "image": "me/train:1", "command": ["python", "-m", "mine"], "args": ["--x", "1"],
        "masterPort": 29500,
        "podTemplate": {
            "labels": {"team": "a", "kubemaas.io/trainingjob": "hijack"},
            "annotations": {"note": "n"},
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "serviceAccountName": "trainer",
            "env": [{"name": "EXTRA", "value": "1"}],
        },
    }
    job = build(spec, restarts=1, output="/data/out")
    c = container(job)
    template = job["spec"]["template"]
    assert (c["image"], c["command"]) == ("me/train:1", ["python", "-m", "mine", "--x", "1"])
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["kubemaas.io/trainingjob"] == "digits"
    assert template["metadata"]["labels"]["kubemaas.io/restart"] == "1"
    assert template["metadata"]["annotations"] == {"note": "n"}
    pod = template["spec"]
    assert (pod["nodeSelector"], pod["serviceAccountName"]) == ({"pool": "gpu"}, "trainer")
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    env = env_of(job)
    assert (env["EXTRA"], env["MASTER_PORT"], env["MASTER_ADDR"]) == ("1", "29500", "digits-r1-0.digits-workers")
    assert c["ports"] == [{"name": "master", "containerPort": 29500, "protocol": "TCP"}]


def test_headless_service_publishes_not_ready_ranks() -> None:
    svc = mf.build_service(owner(), tjspec.parse_spec(example_spec()))
    assert svc["metadata"]["name"] == "digits-workers"
    assert svc["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {"kubemaas.io/trainingjob": "digits"},
        "ports": [{"name": "master", "port": 23456, "targetPort": 23456, "protocol": "TCP"}],
    }


def test_active_deadline_is_what_is_left() -> None:
    job = mf.build_job(
        owner(), tjspec.parse_spec(example_spec()), restarts=0, output="/o", image="i", image_pull_policy="Never",
        run_as_user=1, pvc_root="/p", active_deadline_seconds=0,
    )
    assert job["spec"]["activeDeadlineSeconds"] == 1


def test_default_output_uri_comes_from_the_model_store() -> None:
    spec = tjspec.parse_spec({"recipe": {"name": "digits"}})
    assert mf.output_uri(spec, "pvc://kubemaas-models/", "ml", "digits") == "pvc://kubemaas-models/ml/digits"
    given = tjspec.parse_spec({"recipe": {"name": "digits"}, "output": {"uri": "s3://b/x"}})
    assert mf.output_uri(given, "pvc://kubemaas-models", "ml", "digits") == "s3://b/x"


def test_spec_without_recipe_or_command_is_refused() -> None:
    with pytest.raises(ValueError, match=r"spec\.recipe or spec\.command"):
        mf.train_command(tjspec.parse_spec({}), "digits", "/o")
