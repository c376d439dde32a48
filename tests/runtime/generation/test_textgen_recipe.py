"""The ``textgen`` recipe end to end: two real ranks, onnxruntime-genai's model builder, a schema-3 bundle."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from kubemaas_runtime.bundle import BundleError, load_bundle
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.recipes import get_recipe
from kubemaas_runtime.training.recipes.textgen import corpus, train_tokenizer, unigram_perplexity, windows
from tests.runtime.training.training_helpers import rank_done


def test_the_bundle_is_an_onnxruntime_genai_folder_with_a_schema_3_manifest(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)  # verifies every checksum and size
    m = bundle.manifest
    assert (m.task, m.schema_version, m.inputs, m.outputs) == ("text-generation", 3, [], [])
    assert m.generation is not None
    assert (m.generation.context_length, m.generation.vocab_size, m.generation.chat_template) == (1024, 512, True)
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "eval.txt"} <= set(m.files)
    config = json.loads((tiny_bundle / "genai_config.json").read_text())
    assert config["model"]["decoder"]["num_key_value_heads"] == 2


def test_the_onnx_decoder_has_a_kv_cache(tiny_bundle: Path) -> None:
    session = ort.InferenceSession(str(tiny_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()} | {o.name for o in session.get_outputs()}
    for layer in range(2):
        assert {f"past_key_values.{layer}.key", f"present.{layer}.value"} <= names


def test_two_ranks_trained_identical_weights_and_beat_the_unigram_baseline(tiny_run: dict[str, Any]) -> None:
    rank0, rank1 = rank_done(tiny_run["logs"], 0), rank_done(tiny_run["logs"], 1)
    assert rank0["worldSize"] == 2
    assert rank0["paramsSha256"] == rank1["paramsSha256"]
    metrics = tiny_run["done"]["artifact"]["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["perplexity"] < metrics["unigramPerplexity"]


def test_the_artifact_reports_the_bytes_a_fetch_writes(tiny_run: dict[str, Any], tiny_bundle: Path) -> None:
    files = [p for p in tiny_bundle.rglob("*") if p.is_file()]
    assert tiny_run["done"]["artifact"]["sizeBytes"] == sum(p.stat().st_size for p in files)


def test_a_changed_file_fails_verification(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match=r"tokenizer\.json"):
        load_bundle(copy)


def test_held_out_text_is_disjoint_from_training_text() -> None:
    train, held = corpus(0.1)
    share = sum(map(len, held)) / (sum(map(len, held)) + sum(map(len, train)))
    assert 0.05 < share <= 0.1
    assert not set(train) & set(held)


def test_windows_shift_targets_by_one_token() -> None:
    x, y = windows(np.arange(10), 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_unigram_perplexity_of_a_uniform_source_is_the_vocabulary_size() -> None:
    assert unigram_perplexity(np.arange(4).repeat(100), np.arange(4), 4) == pytest.approx(4.0)


def test_the_tokenizer_is_byte_level_and_round_trips_any_text() -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(train_tokenizer(400, 0.1))
    text = "def f(x):\n    return x ** 2  # é 漢字 🙂"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_bad_recipe_parameters_name_the_field_and_value() -> None:
    with pytest.raises(TrainingError, match=r"hidden=100 must be divisible by heads=3"):
        get_recipe("textgen").params({"hidden": "100", "heads": "3"})
