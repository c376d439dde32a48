"""The text-generation lineage and ``spec.compression.methods`` on the real control plane (etcd,
kube-apiserver, controller-manager, scheduler, kwok) with ``kubemaas operator`` as a real process.

kwok simulates the kubelet: pods become Running and Ready but no container runs. Where a kubelet
would report a finished container (a training rank, a compression pod) the test writes that pod
status, termination message included, through the pods/status subresource, as envtest suites do;
the Job, Deployment, garbage-collector and PV controllers are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import ControlPlane
from tests.operator.support import (
    OperatorProcess,
    bind_claims,
    compression_message,
    condition,
    get_json,
    poll,
)
from tests.operator.test_modelservice_operator import (
    apply_msvc,
    compression_job,
    finish_job_pod,
    msvc,
    wait_ready,
)
from tests.operator.test_trainingjob_cluster import end_pod, running_ranks, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRAININGJOB = REPO / "examples" / "trainingjob-textgen.yaml"
MODELSERVICE = REPO / "examples" / "modelservice-textgen.yaml"
SHA = "7e" * 32


@pytest.fixture
def store(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    """The PVC ``kubemaas-models`` (training output and model store), pre-bound to a hostPath PV."""
    volumes = bind_claims(control_plane, namespace, ["kubemaas-models"], reclaim="Retain")
    try:
        yield
    finally:
        control_plane.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def columns(table: str) -> dict[str, str]:
    """The first row of a ``kubectl get`` table by header, cut at the header's column offsets
    (an empty cell, such as REASON when Ready, would shift a whitespace split)."""
    header, first = table.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): first[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


def textgen_report(sha: str) -> dict[str, Any]:
    """The termination message ``kubemaas compress`` writes for a text-generation bundle
    (``kubemaas_runtime.compression.textgen.termination``)."""
    def row(name: str, size: int, ppl: float, inc: float, tps: float) -> dict[str, Any]:
        return {"name": name, "sizeBytes": size, "perplexity": ppl, "perplexityIncrease": inc,
                "tokensPerSecond": tps, "ttftMs": 2.5, "passed": inc <= 0.05}
    return {"selected": "int4", "reason": "auto: fastest within +5.00% perplexity: int4 at 2712 tokens/s",
            "bundle": {"uri": "pvc://kubemaas-models/out/textgen", "sha256": sha, "sizeBytes": 1_500_000},
            "variants": [row("fp32", 5_800_000, 61.52, 0.0, 905.3), row("int4", 1_300_000, 61.77, 0.0041, 2712.4),
                         row("int8", 1_900_000, 61.6, 0.0013, 1811.0)]}


def test_textgen_trainingjob_to_compression_to_serving(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str, store: None
) -> None:
    """The example pair, applied as a user would: the textgen recipe trains on two ranks, the
    ModelService compresses its bundle under the perplexity gate and serves the selected variant;
    status and ``kubectl get msvc`` show the task, the variant, perplexity and tokens/s."""
    control_plane.kubectl("apply", "-n", namespace, "-f", str(TRAININGJOB), "-f", str(MODELSERVICE))
    name = yaml.safe_load(MODELSERVICE.read_text())["metadata"]["name"]
    tj_name = yaml.safe_load(TRAININGJOB.read_text())["metadata"]["name"]

    ranks = running_ranks(control_plane, namespace, tj_name, 0, 2)
    trainer = get_json(control_plane, "pod", ranks[0], "-n", namespace)["spec"]["containers"][0]
    cmd = trainer["command"]
    assert cmd[:4] == ["kubemaas", "train", "--recipe", "textgen"]
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"] == [
        "context=512", "heads=4", "hidden=128", "layers=4", "seq_len=64", "vocab=2048"]
    waiting = poll(lambda: condition(msvc(control_plane, namespace, name), "ArtifactReady"), what="ArtifactReady")
    assert (waiting["status"], waiting["reason"]) == ("False", "WaitingForTraining")

    artifact = {"uri": "pvc://kubemaas-models/textgen", "sha256": SHA,
                "metrics": {"loss": 4.119, "perplexity": 61.52, "unigramPerplexity": 556.0}, "sizeBytes": 6_000_000}
    end_pod(control_plane, namespace, ranks[1], exit_code=0)
    end_pod(control_plane, namespace, ranks[0], exit_code=0, message=json.dumps({"artifact": artifact}))
    wait_phase(control_plane, namespace, tj_name, "Succeeded")
    trained = get_json(control_plane, "trainingjob", tj_name, "-n", namespace)["status"]["artifact"]
    assert trained["sizeBytes"] == 6_000_000  # declared in the CRD, so not pruned

    job = compression_job(control_plane, namespace, name)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["compress", "--bundle", "pvc://kubemaas-models/textgen"]
    assert args[args.index("--mode") + 1] == "auto"
    assert args[args.index("--max-perplexity-increase") + 1] == "0.05"  # routes the remote bundle to the textgen path
    assert "--methods" not in args
    compressing = msvc(control_plane, namespace, name)["status"]
    assert compressing["phase"] == "Compressing"
    assert compressing["compression"]["maxPerplexityIncrease"] == 0.05

    finish_job_pod(control_plane, namespace, job["metadata"]["name"], textgen_report("9a" * 32), ok=True)
    obj = wait_ready(control_plane, namespace, name)
    st = obj["status"]
    assert st["model"] == {
        "uri": "pvc://kubemaas-models/out/textgen", "sha256": "9a" * 32, "variant": "int4", "sizeBytes": 1_300_000,
        "sourceUri": "pvc://kubemaas-models/textgen", "sourceSha256": SHA,
        "source": {"kind": "TrainingJob", "namespace": namespace, "name": tj_name,
                   "uid": get_json(control_plane, "trainingjob", tj_name, "-n", namespace)["metadata"]["uid"]},
        "task": "text-generation", "perplexity": 61.77, "tokensPerSecond": 2712.4,
    }
    assert [(v["name"], v["perplexityIncrease"], v["tokensPerSecond"]) for v in st["compression"]["variants"]] == [
        ("fp32", 0.0, 905.3), ("int4", 0.0041, 2712.4), ("int8", 0.0013, 1811.0)]
    assert condition(obj, "Compressed")["reason"] == "VariantSelected"  # type: ignore[index]
    row = columns(control_plane.kubectl("get", "msvc", name, "-n", namespace).stdout)
    assert (row["READY"], row["VARIANT"], row["TASK"], row["PERPLEXITY"], row["TOKENS/S"]) == (
        "True", "int4", "text-generation", "61.77", "2712.4")
    dep = get_json(control_plane, "deployment", name, "-n", namespace)
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == "pvc://kubemaas-models/out/textgen"
    assert st["compression"]["bundle"]["sizeBytes"] == 1_500_000
    # no spec.storage.sizeLimit: 2 x the compressed bundle + 1Gi, in whole MiB (3_000_000 B = 2.9 MiB -> 3)
    (models,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"]
    assert models["emptyDir"] == {"sizeLimit": f"{1024 + 3}Mi"}


def test_students_on_a_bundle_without_a_recipe_fail_with_the_runtimes_reason(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str, store: None, tmp_path: Path
) -> None:
    """``methods: [quantize, prune]`` on a bundle from a uri: the Job asks for students; the
    pod's termination message is the one the real ``kubemaas compress`` writes for such a bundle,
    and the ModelService says why in Compressed and REASON (not a failed accuracy gate)."""
    from tests.runtime.compression import models

    bundle = models.tied_bundle(tmp_path / "onnx-only")
    message = compression_message(bundle.path, tmp_path / "out", "--mode", "auto", "--methods", "quantize,prune",
                                  exit_code=2)

    apply_msvc(control_plane, namespace, "st", {
        "model": {"uri": "pvc://kubemaas-models/byo"},
        "compression": {"mode": "auto", "methods": ["quantize", "prune"]},
    })
    job = compression_job(control_plane, namespace, "st")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--methods") + 1] == "quantize,prune"
    finish_job_pod(control_plane, namespace, job["metadata"]["name"], json.loads(message), ok=False)

    def failed() -> Any:
        obj = msvc(control_plane, namespace, "st")
        comp = condition(obj, "Compressed")
        return obj if comp and comp["reason"] == "CompressionFailed" else None

    obj = poll(failed, timeout=60, what="Compressed=False CompressionFailed")
    assert "--methods prune: " in condition(obj, "Compressed")["message"]  # type: ignore[index]
    assert "names no built-in recipe" in condition(obj, "Compressed")["message"]  # type: ignore[index]
    assert (obj["status"]["phase"], obj["status"]["reason"]) == ("Failed", "CompressionFailed")
    assert obj["status"]["compression"]["methods"] == ["quantize", "prune"]
    assert get_json(control_plane, "deployment", "st", "-n", namespace) is None
