"""Pure parts of the generation runtime: provider choice, sampling, stop strings, detokenization,
and the decoder's batched step against one sequence at a time (real ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kubemaas_runtime.generation.engine import Decoder
from kubemaas_runtime.generation.folder import read_genai_config
from kubemaas_runtime.generation.metrics import GenerationMetrics
from kubemaas_runtime.generation.providers import CPU, CUDA, choose_providers
from kubemaas_runtime.generation.sampling import SamplingParams, sample
from kubemaas_runtime.generation.scheduler import QueueFull, Scheduler, _stop_at
from kubemaas_runtime.generation.tokenizer import IncrementalDetokenizer, TextTokenizer

BOTH = [CUDA, CPU]


@pytest.mark.parametrize(
    ("requested", "available", "env", "node", "expected"),
    [
        ("auto", BOTH, {}, True, BOTH),
        ("auto", BOTH, {"CUDA_VISIBLE_DEVICES": ""}, True, [CPU]),
        ("auto", BOTH, {"NVIDIA_VISIBLE_DEVICES": "void"}, True, [CPU]),
        ("auto", BOTH, {}, False, [CPU]),
        ("auto", [CPU], {}, True, [CPU]),
        ("cpu", BOTH, {}, True, [CPU]),
        ("cuda", BOTH, {"CUDA_VISIBLE_DEVICES": "0"}, True, BOTH),
    ],
)
def test_provider_choice(requested: str, available: list[str], env: dict[str, str], node: bool,
                         expected: list[str]) -> None:
    assert choose_providers(requested, available, env, node) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("available", "env", "node", "why"), [
    ([CPU], {}, True, "install the CUDA build"),
    (BOTH, {"CUDA_VISIBLE_DEVICES": "-1"}, True, "no GPU is visible"),
    (BOTH, {}, False, "no GPU is visible"),
])
def test_asking_for_cuda_where_it_cannot_work_is_an_error(available: list[str], env: dict[str, str], node: bool,
                                                           why: str) -> None:
    with pytest.raises(ValueError, match=why):
        choose_providers("cuda", available, env, node)


def test_greedy_top_k_1_and_a_tiny_top_p_all_pick_the_argmax() -> None:
    logits = np.array([0.1, 2.0, 1.9, -1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    for params in (SamplingParams(4, temperature=0), SamplingParams(4, top_k=1), SamplingParams(4, top_p=0.01)):
        assert {sample(logits, params, rng) for _ in range(20)} == {1}


def test_top_k_2_never_samples_outside_the_two_best() -> None:
    logits = np.array([0.0, 3.0, 2.9, 2.8], dtype=np.float32)
    rng = np.random.default_rng(1)
    assert {sample(logits, SamplingParams(4, top_k=2, temperature=2.0), rng) for _ in range(200)} == {1, 2}


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = np.zeros(50, dtype=np.float32)
    draws = [[sample(logits, SamplingParams(1), np.random.default_rng(5)) for _ in range(10)] for _ in range(2)]
    assert draws[0] == draws[1]


def test_stop_strings_are_found_only_in_unsent_text() -> None:
    assert _stop_at("abc END def", ("END",), 0) == 4
    assert _stop_at("abc def", ("END", "x"), 0) is None
    assert _stop_at("abc ENDxyz", ("END", "xy"), 5) == 4


def test_incremental_detokenization_equals_decoding_everything(tiny_bundle: Path) -> None:
    tok = TextTokenizer(tiny_bundle)
    text = "Les chaînes: «é» 漢字 and `print()`"
    ids = tok.encode(text)
    inc = IncrementalDetokenizer(tok)
    pieces = [inc.push(i) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_a_batched_decode_step_equals_one_sequence_at_a_time(tiny_bundle: Path) -> None:
    shape = read_genai_config(tiny_bundle)
    batch = Decoder(tiny_bundle, shape, slots=3)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    for slot, prompt in enumerate(prompts):
        batch.prefill(slot, prompt)
    step = batch.decode([1, 2, 3], [5, 2, 3])
    for row, (prompt, token) in enumerate(zip(prompts, [1, 2, 3], strict=True)):
        alone = Decoder(tiny_bundle, shape, slots=1).prefill(0, [*prompt, token])
        np.testing.assert_allclose(step[row], alone, atol=1e-4)
    batch.move(2, 0, 4)  # slot 0 finished: the last one moves into it
    moved = batch.decode([4], [4])
    np.testing.assert_allclose(moved[0], Decoder(tiny_bundle, shape, slots=1).prefill(0, [12, 13, 14, 3, 4]),
                               atol=1e-4)


def test_max_model_len_caps_the_kv_buffer_below_the_models_context(tiny_bundle: Path) -> None:
    shape = read_genai_config(tiny_bundle)
    decoder = Decoder(tiny_bundle, shape, slots=2, max_model_len=32)
    assert (shape.context_length, decoder.context_length) == (1024, 32)
    assert decoder.keys[0].shape == (2, shape.kv_heads, 32, shape.head_size)
    with pytest.raises(ValueError, match=r"need 1\.\.32"):
        decoder.prefill(0, list(range(33)))


def test_warm_up_fits_the_smallest_context_the_settings_allow(tiny_bundle: Path) -> None:
    decoder = Decoder(tiny_bundle, read_genai_config(tiny_bundle), slots=2, max_model_len=2)  # GenerationSettings' ge=2
    decoder.warm_up()  # a prompt of 0 tokens failed start-up with "need 1..2"
    assert decoder.decode([1, 2], [1, 1]).shape == (2, 512)


def test_a_free_slot_admits_a_request_even_with_no_waiting_places(tiny_bundle: Path) -> None:
    decoder = Decoder(tiny_bundle, read_genai_config(tiny_bundle), slots=2)
    scheduler = Scheduler(decoder, TextTokenizer(tiny_bundle), GenerationMetrics("m"), max_waiting=1)
    seqs = [scheduler.new_sequence([1, 2], SamplingParams(max_tokens=1), lambda _: None, frozenset()) for _ in range(4)]
    for seq in seqs[:3]:  # two free slots + one waiting place (the thread is not started: nothing is admitted)
        scheduler.submit(seq)
    with pytest.raises(QueueFull, match=r"all 2 slots are busy and 1 requests are waiting for one \(max_waiting=1\)"):
        scheduler.submit(seqs[3])
