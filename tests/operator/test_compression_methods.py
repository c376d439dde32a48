"""``spec.compression.methods`` (quantize, prune, distill) and the text-generation lineage, pure:
the compression Job's image and arguments, the report's candidates in status, the runtime's
refusal surfaced in status, perplexity-gated reports, and the textgen TrainingJob's command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from kubemaas_operator.controllers.modelservice import artifact, compress, compression
from kubemaas_operator.controllers.modelservice.children import ServingBundle, serving_bundle_of
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec, parse_modelservice
from kubemaas_operator.controllers.trainingjob import children as training
from kubemaas_operator.controllers.trainingjob.spec import parse_spec
from kubemaas_operator.kube.manifests import stable_hash
from kubemaas_operator.settings import OperatorSettings
from kubemaas_runtime import contracts
from kubemaas_runtime.compression.students import METHODS
from tests.operator.support import compression_message

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(model_store_uri="pvc://store", serving_image="serve:1", training_image="train:1")
OWNER = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService",
         "metadata": {"name": "m", "namespace": "ns", "uid": "u-1"}}
SOURCE = ServingBundle(uri="pvc://m/x", sha256="a" * 64, source=("TrainingJob", "ml", "train"))
TEXTGEN_SOURCE = ServingBundle(uri="pvc://m/tg", sha256="b" * 64, source=("TrainingJob", "ml", "tg"),
                               task=contracts.TEXT_GENERATION, perplexity=61.5)


def spec(**compression_fields: Any) -> ModelServiceSpec:
    return parse_modelservice({"model": {"uri": "pvc://m/x"}, "compression": compression_fields})


def container(s: ModelServiceSpec, text_generation: bool = False) -> dict[str, Any]:
    job = compression.job(OWNER, s, "pvc://m/x", "a" * 64, SETTINGS, text_generation)
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def crd_compression() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "crds" / "modelservice.yaml").read_text())
    props = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return dict(props["compression"])


def test_crd_methods_are_the_contract_and_the_runtime_flag() -> None:
    methods = crd_compression()["properties"]["methods"]
    assert tuple(methods["items"]["enum"]) == contracts.COMPRESSION_METHODS == METHODS
    assert tuple(methods["default"]) == contracts.DEFAULT_COMPRESSION_METHODS == ("quantize",)


def test_default_methods_keep_the_serving_image_args_and_job_name() -> None:
    s = spec(mode="auto")
    c = container(s)
    assert c["image"] == "serve:1"
    assert "--methods" not in c["args"]
    # the name a Job got before methods existed: an operator upgrade starts no new compression
    old = stable_hash({"sha256": "a" * 64, "mode": "auto", "maxAccuracyDrop": 0.01}, 8)
    assert compression.job_name("m", "a" * 64, s) == f"m-compress-{old}"


def test_prune_and_distill_run_compress_in_the_training_image() -> None:
    s = spec(mode="auto", methods=["quantize", "prune", "distill"])
    c = container(s)
    assert c["image"] == "train:1"
    assert c["args"][c["args"].index("--methods") + 1] == "quantize,prune,distill"
    assert compression.job_name("m", "a" * 64, s) != compression.job_name("m", "a" * 64, spec(mode="auto"))


def test_students_without_mode_auto_are_refused_naming_the_field() -> None:
    with pytest.raises(kopf.PermanentError, match=r"spec\.compression.*\['prune'\].*mode auto.*'int8-static'"):
        spec(mode="int8-static", methods=["quantize", "prune"])
    with pytest.raises(kopf.PermanentError, match=r"spec\.compression\.methods.*at most once"):
        spec(mode="auto", methods=["prune", "prune"])
    with pytest.raises(kopf.PermanentError, match=r"spec\.compression\.methods\.0"):
        spec(mode="auto", methods=["shrink"])


def student_report() -> dict[str, Any]:
    def row(name: str, size: int, p50: float, drop: float) -> dict[str, Any]:
        return {"name": name, "sizeBytes": size, "p50Batch1Ms": p50 / 8, "p50Batch32Ms": p50,
                "accuracy": 0.95 - drop, "accuracyDrop": drop, "passed": drop <= 0.01}
    return {"selected": "pruned-int8-dynamic", "reason": "auto: fastest within the gate",
            "bundle": {"uri": "pvc://store/ns/m/x", "sha256": "c" * 64},
            "variants": [row("fp32", 4000, 2.0, 0.0), row("int8-dynamic", 1100, 1.2, 0.003),
                         row("pruned", 2000, 0.9, 0.006), row("pruned-int8-dynamic", 600, 0.5, 0.008),
                         row("distilled", 900, 0.4, 0.04)]}


def test_status_compression_shows_every_candidate_students_included() -> None:
    base = {"job": "m-compress-1", "mode": "auto", "methods": ["quantize", "prune", "distill"],
            "maxAccuracyDrop": 0.01}
    result = compress.judge_report(base, "Succeeded", json.dumps(student_report()), SOURCE, 0.01)
    assert result.serving is not None
    assert (result.serving.variant, result.serving.size_bytes) == ("pruned-int8-dynamic", 600)
    assert result.status is not None
    assert [v["name"] for v in result.status["variants"]] == [
        "fp32", "int8-dynamic", "pruned", "pruned-int8-dynamic", "distilled"]
    assert result.status["methods"] == ["quantize", "prune", "distill"]
    assert [v["passed"] for v in result.status["variants"]] == [True, True, True, True, False]


def test_the_runtimes_refusal_of_a_bundle_without_a_recipe_is_the_compressed_reason(tmp_path: Path) -> None:
    """The real ``kubemaas compress --methods prune`` on a bundle from a uri (no recipe recorded):
    its termination message, read as the operator reads it, fails the compression with the
    runtime's own reason, not as a failed accuracy gate."""
    from tests.runtime.compression import models

    bundle = models.tied_bundle(tmp_path / "onnx-only")
    message = compression_message(bundle.path, tmp_path / "out", "--mode", "auto", "--methods", "quantize,prune",
                                  exit_code=2)
    base = {"job": "m-compress-1", "mode": "auto", "methods": ["quantize", "prune"], "maxAccuracyDrop": 0.01}
    result = compress.judge_report(base, "Failed", message, SOURCE, 0.01)
    assert (result.condition.ok, result.condition.reason, result.failed) == (False, "CompressionFailed", True)
    assert "--methods prune: " in result.condition.message
    assert "names no built-in recipe" in result.condition.message
    assert result.status is not None
    assert "names no built-in recipe" in result.status["reason"]


# -- text generation ---------------------------------------------------------------------------


def textgen_report(selected: str | None, int4_increase: float = 0.004) -> dict[str, Any]:
    def row(name: str, size: int, ppl: float, inc: float, tps: float) -> dict[str, Any]:
        return {"name": name, "sizeBytes": size, "perplexity": ppl, "perplexityIncrease": inc,
                "tokensPerSecond": tps, "ttftMs": 3.0, "passed": inc <= 0.05}
    return {"selected": selected, "reason": "auto: fastest within +5.00% perplexity" if selected else "gate",
            "bundle": {"uri": "pvc://store/ns/m/tg", "sha256": "d" * 64} if selected else None,
            "variants": [row("fp32", 20_000_000, 61.5, 0.0, 900.0),
                         row("int4", 4_000_000, 61.5 * (1 + int4_increase), int4_increase, 2700.0),
                         row("int8", 6_000_000, 61.6, 0.0016, 1800.0)]}


def test_a_textgen_source_gets_the_perplexity_gate_flag() -> None:
    s = spec(mode="auto")
    assert "--max-perplexity-increase" not in container(s)["args"]
    args = container(s, text_generation=True)["args"]
    assert args[args.index("--max-perplexity-increase") + 1] == "0.05"
    assert compression.job_name("m", "b" * 64, s, True) != compression.job_name("m", "b" * 64, s)
    explicit = container(spec(mode="auto", maxPerplexityIncrease=0.02))["args"]  # a uri the user marks as text
    assert explicit[explicit.index("--max-perplexity-increase") + 1] == "0.02"


def test_a_textgen_report_serves_the_variant_with_task_perplexity_and_tokens_per_second() -> None:
    base = {"job": "m-compress-2", "mode": "auto", "maxAccuracyDrop": 0.01, "maxPerplexityIncrease": 0.05}
    result = compress.judge_report(base, "Succeeded", json.dumps(textgen_report("int4")), TEXTGEN_SOURCE, 0.01)
    served = result.serving
    assert served is not None
    assert served.status() == {
        "uri": "pvc://store/ns/m/tg", "sha256": "d" * 64, "variant": "int4", "sizeBytes": 4_000_000,
        "sourceUri": "pvc://m/tg", "sourceSha256": "b" * 64,
        "source": {"kind": "TrainingJob", "namespace": "ml", "name": "tg"},
        "task": "text-generation", "perplexity": round(61.5 * 1.004, 4), "tokensPerSecond": 2700.0,
    }
    # the Deployment's annotations carry it, so a restarted operator reads the same status back
    assert serving_bundle_of({"metadata": {"annotations": served.annotations()}}) == served


def test_a_failed_perplexity_gate_names_the_best_increase() -> None:
    base = {"job": "m-compress-3", "mode": "int4", "maxAccuracyDrop": 0.01, "maxPerplexityIncrease": 0.05}
    result = compress.judge_report(base, "Failed", json.dumps(textgen_report(None, int4_increase=0.073)),
                                   TEXTGEN_SOURCE, 0.01)
    assert (result.condition.reason, result.failed) == (compression.GATE_FAILED, True)
    assert result.condition.message.startswith("no variant within maxPerplexityIncrease 0.05: ")
    assert "int4 perplexity +7.30% (failed)" in result.condition.message
    assert result.status is not None
    assert compression.gate_reason(result.status) == "AccuracyGateFailed: best perplexity +7.3% (int4) > +5%"


def test_a_textgen_trainingjob_is_known_as_text_generation_with_its_perplexity() -> None:
    tj = {"metadata": {"uid": "u-9"}, "spec": {"recipe": {"name": "textgen"}},
          "status": {"phase": "Succeeded", "artifact": {"uri": "pvc://m/tg", "sha256": "b" * 64,
                                                        "metrics": {"perplexity": 61.5, "loss": 4.1}}}}
    bundle = artifact.resolve_training_job("ml", "tg", tj).bundle
    assert bundle is not None
    assert (bundle.task, bundle.perplexity) == ("text-generation", 61.5)
    digits = {**tj, "spec": {"recipe": {"name": "digits"}},
              "status": {"phase": "Succeeded", "artifact": {"uri": "pvc://m/d", "sha256": "e" * 64,
                                                            "metrics": {"accuracy": 0.97}}}}
    plain = artifact.resolve_training_job("ml", "d", digits).bundle
    assert plain is not None
    assert (plain.task, plain.perplexity) == (None, None)
    assert "task" not in plain.status()


def test_textgen_recipe_params_become_set_flags() -> None:
    tj = parse_spec({"recipe": {"name": "textgen", "epochs": 1,
                                "params": {"hidden": 64, "layers": 2, "heldout_fraction": "0.1", "bf16": "false"}}})
    cmd = training.train_command(tj, "tg", "pvc://m/tg")
    assert cmd[:4] == ["kubemaas", "train", "--recipe", "textgen"]
    assert cmd[cmd.index("--epochs") + 1] == "1"
    flags = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    assert flags == ["bf16=false", "heldout_fraction=0.1", "hidden=64", "layers=2"]


def test_textgen_fixed_modes_are_the_runtimes_and_reach_the_job() -> None:
    from kubemaas_runtime.compression.textgen import BITS, TEXTGEN_MODES

    assert set(contracts.TEXTGEN_COMPRESSION_MODES) == set(BITS) == set(TEXTGEN_MODES) - {"auto", "none"}
    args = container(spec(mode="int4"), text_generation=True)["args"]
    assert (args[args.index("--mode") + 1], args[args.index("--max-perplexity-increase") + 1]) == ("int4", "0.05")
    with pytest.raises(kopf.PermanentError, match=r"mode auto.*'int8'"):
        spec(mode="int8", methods=["distill"])
