"""The operator <-> runtime contracts (``kubemaas_runtime.contracts``) against every copy of them:
the CRD's enums and defaults, the runtime's settings, and the env vars the operator sets on pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic_settings import BaseSettings

from kubemaas_operator.controllers.modelservice import children, compression
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice
from kubemaas_operator.controllers.trainingjob import children as training
from kubemaas_operator.controllers.trainingjob.spec import parse_spec
from kubemaas_operator.settings import OperatorSettings
from kubemaas_runtime import contracts
from kubemaas_runtime.compression.settings import MODES, CompressSettings, Mode
from kubemaas_runtime.serving.settings import ServingSettings
from kubemaas_runtime.storage.settings import StorageSettings
from kubemaas_runtime.training.settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(model_store_uri="pvc://store")
OWNER = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService",
         "metadata": {"name": "m", "namespace": "ns", "uid": "u-1"}}
TJ_OWNER = {**OWNER, "kind": "TrainingJob"}
EVERYTHING = parse_modelservice({
    "model": {"uri": "pvc://models/m"},
    "compression": {"mode": "auto"},
    "runtime": {"batchAxis": 0, "authSecretName": "token"},
})


def spec_schema(crd: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "crds" / crd).read_text())
    return dict(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def test_crd_compression_enum_and_defaults_are_the_contract() -> None:
    comp = spec_schema("modelservice.yaml")["compression"]["properties"]
    assert tuple(comp["mode"]["enum"]) == contracts.COMPRESSION_MODES + contracts.TEXTGEN_COMPRESSION_MODES
    assert (comp["mode"]["default"], comp["maxAccuracyDrop"]["default"]) == (
        contracts.DEFAULT_COMPRESSION_MODE, contracts.DEFAULT_MAX_ACCURACY_DROP)


def test_crd_serving_defaults_are_the_contract() -> None:
    runtime = spec_schema("modelservice.yaml")["runtime"]["properties"]
    defaults = {key: runtime[key]["default"] for key in ("maxBatchSize", "maxDelayMs", "maxQueue", "threads")}
    assert defaults == {
        "maxBatchSize": contracts.DEFAULT_MAX_BATCH_SIZE, "maxDelayMs": contracts.DEFAULT_MAX_DELAY_MS,
        "maxQueue": contracts.DEFAULT_MAX_QUEUE, "threads": contracts.DEFAULT_THREADS,
    }


def test_runtime_settings_defaults_are_the_contract() -> None:
    serving = ServingSettings.model_fields
    assert (serving["max_batch_size"].default, serving["max_delay_ms"].default, serving["max_queue"].default,
            serving["port"].default, str(serving["model_dir"].default)) == (
        contracts.DEFAULT_MAX_BATCH_SIZE, contracts.DEFAULT_MAX_DELAY_MS, contracts.DEFAULT_MAX_QUEUE,
        contracts.SERVING_PORT, contracts.MODEL_DIR)
    assert set(MODES) == set(contracts.COMPRESSION_MODES) == set(get_args(Mode))


def kubemaas_env(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env") or [] if e["name"].startswith(contracts.ENV_PREFIX)}


def fields(*settings: type[BaseSettings]) -> set[str]:
    return {contracts.env_name(name) for cls in settings for name in cls.model_fields}


def containers() -> list[tuple[str, dict[str, Any], set[str]]]:
    deploy = children.deployment(OWNER, EVERYTHING, children.ServingBundle(uri="pvc://models/m", sha256=""), SETTINGS)
    pod = deploy["spec"]["template"]["spec"]
    job = compression.job(OWNER, EVERYTHING, "pvc://models/m", "abc", SETTINGS)
    gang = training.build_job(
        TJ_OWNER, parse_spec({"recipe": {"name": "digits"}}), restarts=0, output="pvc://models/t", image="i",
        image_pull_policy="Never", run_as_user=1000, pvc_root="/mnt/pvc", active_deadline_seconds=None,
    )
    return [
        ("serve", pod["containers"][0], fields(ServingSettings)),
        ("fetch", pod["initContainers"][0], fields(StorageSettings)),
        ("compress", job["spec"]["template"]["spec"]["containers"][0], fields(CompressSettings, StorageSettings)),
        ("train", gang["spec"]["template"]["spec"]["containers"][0], fields(TrainingSettings, StorageSettings)),
    ]


@pytest.mark.parametrize("name", ["serve", "fetch", "compress", "train"])
def test_every_env_var_the_operator_sets_is_a_setting_the_container_reads(name: str) -> None:
    _, container, readable = next(c for c in containers() if c[0] == name)
    assert kubemaas_env(container), f"{name}: no KUBEMAAS_* env at all"
    assert sorted(kubemaas_env(container) - readable) == []


def test_batch_axis_reaches_the_serving_container_only_when_set() -> None:
    serve = containers()[0][1]
    plain = children.serving_env("m", parse_modelservice({"model": {"uri": "s3://b/m"}}), SETTINGS)
    assert {"name": contracts.ServingEnv.BATCH_AXIS, "value": "0"} in serve["env"]
    assert contracts.ServingEnv.BATCH_AXIS not in {e["name"] for e in plain}
