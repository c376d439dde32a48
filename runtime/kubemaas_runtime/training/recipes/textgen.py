"""``textgen``: a small Llama-style decoder trained from scratch on CPython's own documentation.

Data: ``pydoc_data.topics`` (ships with Python; ~465k characters of English about Python). Topics,
in name order, are split by a fixed rule into training and held-out text: a topic is held out
when the held-out share of the characters seen so far, it included, stays within ``heldout_fraction``. A byte-level BPE tokenizer (Hugging Face ``tokenizers``, GPT-2's byte-level
pre-tokenizer) is trained on the training text only. Samples are non-overlapping windows of
``seq_len + 1`` tokens: ``x = w[:-1]``, ``y = w[1:]`` (``[batch, seq_len]`` int64 each).

Model: ``transformers.LlamaForCausalLM`` built from a ``LlamaConfig`` (random init), an
architecture onnxruntime-genai's model builder exports with a KV cache. The wrapper returns
logits as ``[batch, vocab, seq_len]`` so the project's loop applies ``cross_entropy`` unchanged;
optional bf16 autocast in training (about 2x faster on CPUs with AVX512-BF16/AMX).

Held-out metric: mean next-token negative log-likelihood (``loss``, nats/token),
``perplexity = exp(loss)`` and, as the baseline to beat, the perplexity of the training text's
add-one-smoothed unigram distribution on the same held-out tokens (``unigramPerplexity``).

The bundle is built by ``onnxruntime_genai.models.builder`` from the trained checkpoint
(``generation/builder.py``) and described with manifest schema 3 (``generation/folder.py``).
"""

from __future__ import annotations

import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from kubemaas_runtime.training.recipes.base import BuiltinRecipe, RecipeParams, Splits

EOS = "<|endoftext|>"
SPECIAL_TOKENS = (EOS, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Role-tagged turns (the Phi-3/Zephyr style), rendered by the server from the bundle's tokenizer files."""
EVAL_TEXT = "eval.txt"


class TextgenParams(RecipeParams):
    vocab: int = Field(default=2048, ge=300, le=65_536)
    """BPE vocabulary size including the 256 byte tokens and the special tokens."""
    hidden: int = Field(default=128, ge=16, le=8192)
    layers: int = Field(default=4, ge=1, le=64)
    heads: int = Field(default=4, ge=1, le=128)
    kv_heads: int = Field(default=4, ge=1, le=128)
    """Key-value heads (grouped-query attention when fewer than ``heads``)."""
    ff: int = Field(default=384, ge=16, le=32_768)
    seq_len: int = Field(default=64, ge=8, le=8192)
    """Training window in tokens."""
    context: int = Field(default=512, ge=16, le=131_072)
    """Longest sequence the exported model serves (prompt + output): max_position_embeddings."""
    heldout_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    """Share of the characters held out for evaluation (whole topics, spread over the alphabet)."""
    max_train_windows: int = Field(default=0, ge=0)
    """Cap on training windows (0 = all), to train tiny models fast in tests."""
    bf16: bool = True
    """bf16 autocast for the forward pass in training (weights and the exported model stay fp32)."""

    @model_validator(mode="after")
    def _shapes(self) -> TextgenParams:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be divisible by kv_heads={self.kv_heads}")
        if self.seq_len > self.context:
            raise ValueError(f"seq_len={self.seq_len} must be <= context={self.context}")
        return self


def corpus(heldout_fraction: float) -> tuple[list[str], list[str]]:
    """``(training topics, held-out topics)`` from ``pydoc_data.topics``, split deterministically."""
    from pydoc_data.topics import topics

    train: list[str] = []
    held: list[str] = []
    seen = held_chars = 0
    for name in sorted(topics):
        text = topics[name]
        seen += len(text)
        if held_chars + len(text) <= heldout_fraction * seen:
            held.append(text)
            held_chars += len(text)
        else:
            train.append(text)
    return train, held


@functools.lru_cache(maxsize=4)
def train_tokenizer(vocab: int, heldout_fraction: float) -> str:
    """A byte-level BPE trained on the training topics; returns ``tokenizer.json`` text.

    Deterministic for the same arguments, so every rank of a distributed run builds the same one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    train, _ = corpus(heldout_fraction)
    tokenizer.train_from_iterator(train, trainer)
    return str(tokenizer.to_str())


def encode_documents(tokenizer_json: str, documents: list[str]) -> np.ndarray:
    """Token ids of the documents, each followed by the end-of-text token, as one int64 array."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    eos = tokenizer.token_to_id(EOS)
    if eos is None:
        raise ValueError(f"the tokenizer has no {EOS} token")
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``seq_len + 1`` windows as ``(x, y)``, each ``[n, seq_len]``, y shifted by one."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise ValueError(f"{len(ids)} tokens are too few for seq_len={seq_len}")
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def unigram_perplexity(train_ids: np.ndarray, heldout: np.ndarray, vocab: int) -> float:
    """Perplexity of the add-one-smoothed unigram distribution of ``train_ids`` on ``heldout`` tokens."""
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[heldout.ravel()].mean()))


@dataclass(frozen=True)
class TextSplits(Splits):
    """``Splits`` plus what the bundle needs: the tokenizer, the held-out text and the baseline."""

    tokenizer_json: str = ""
    eval_text: str = ""
    unigram_perplexity: float = 0.0
    params: TextgenParams | None = None


class CausalLM(nn.Module):
    """``LlamaForCausalLM`` whose forward maps tokens ``[B, T]`` to logits ``[B, vocab, T]`` (fp32)."""

    def __init__(self, p: TextgenParams, vocab: int) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=p.hidden,
            intermediate_size=p.ff,
            num_hidden_layers=p.layers,
            num_attention_heads=p.heads,
            num_key_value_heads=p.kv_heads,
            max_position_embeddings=p.context,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            tie_word_embeddings=False,
            use_cache=False,
        )
        self.lm = LlamaForCausalLM(config)
        self.bf16 = p.bf16

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        enabled = self.bf16 and self.training
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=enabled):
            logits = self.lm(input_ids=tokens, use_cache=False).logits
        out: torch.Tensor = logits.float().transpose(1, 2)
        return out


@dataclass(frozen=True)
class TokenEvaluation:
    """Held-out next-token accuracy and mean loss in nats per token (the loop's ``Evaluation`` shape)."""

    accuracy: float
    loss: float


class TextgenRecipe(BuiltinRecipe[TextgenParams]):
    name = "textgen"
    epochs = 4
    batch_size = 8
    lr = 6e-3
    # Demo size (1.4M parameters): one epoch is ~1,800 windows of 64 tokens, ~15 s with 2 threads on
    # the 2-core development machine. Two epochs measured held-out perplexity 173 against the unigram
    # baseline's 556; four take about a minute.
    input_name = "input_ids"
    output_name = "logits"
    params_type = TextgenParams

    def data(self, params: RecipeParams) -> TextSplits:
        params = self.own(params)
        tokenizer_json = train_tokenizer(params.vocab, params.heldout_fraction)
        train_docs, held_docs = corpus(params.heldout_fraction)
        train_ids = encode_documents(tokenizer_json, train_docs)
        held_ids = encode_documents(tokenizer_json, held_docs)
        train_x, train_y = windows(train_ids, params.seq_len)
        if params.max_train_windows:
            train_x, train_y = train_x[: params.max_train_windows], train_y[: params.max_train_windows]
        test_x, test_y = windows(held_ids, params.seq_len)
        return TextSplits(
            train_x,
            train_y,
            test_x,
            test_y,
            labels=[],
            tokenizer_json=tokenizer_json,
            eval_text="\n\n".join(held_docs),
            unigram_perplexity=unigram_perplexity(train_ids, test_y, params.vocab),
            params=params,
        )

    def model(self, params: RecipeParams) -> nn.Module:
        params = self.own(params)
        return CausalLM(params, params.vocab)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> TokenEvaluation:
        """Mean next-token NLL and accuracy over every held-out token (not per window)."""
        model.eval()
        loss, correct = 0.0, 0
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            loss += float(nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum"))
            correct += int((logits.argmax(dim=1) == y[i : i + batch]).sum())
        tokens = y.numel()
        return TokenEvaluation(accuracy=correct / tokens, loss=loss / tokens)

    def save_bundle(
        self,
        model: nn.Module,
        splits: Splits,
        metrics: dict[str, float],
        *,
        output: str,
        name: str,
        checkpoint: dict[str, Any],
        source: Any,
    ) -> tuple[str, dict[str, float], int]:
        """Build the genai folder from the trained weights, describe it and upload it.

        Returns the manifest's sha256, the metrics it records (``perplexity`` added) and the
        bytes a fetch of it writes (``bundle.fetch_bytes``).
        """
        from transformers import PreTrainedTokenizerFast

        from kubemaas_runtime.bundle import CHECKPOINT, fetch_bytes
        from kubemaas_runtime.generation.builder import build_genai_folder
        from kubemaas_runtime.generation.folder import describe_folder
        from kubemaas_runtime.storage import upload

        assert isinstance(splits, TextSplits)
        assert splits.params is not None
        inner = getattr(model, "module", model)
        assert isinstance(inner, CausalLM)
        with tempfile.TemporaryDirectory(prefix="kubemaas-textgen-") as tmp:
            hf, out = Path(tmp) / "hf", Path(tmp) / "bundle"
            inner.lm.save_pretrained(hf)
            from tokenizers import Tokenizer

            fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
                tokenizer_object=Tokenizer.from_str(splits.tokenizer_json),
                bos_token=EOS,
                eos_token=EOS,
                pad_token=EOS,
                model_max_length=splits.params.context,
            )
            fast.chat_template = CHAT_TEMPLATE
            fast.save_pretrained(hf)
            build_genai_folder(hf, out)
            (out / EVAL_TEXT).write_text(splits.eval_text)
            torch.save(checkpoint, out / CHECKPOINT)
            clean = {
                **metrics,
                "perplexity": math.exp(metrics["loss"]),
                "unigramPerplexity": splits.unigram_perplexity,
                "parameters": float(sum(p.numel() for p in inner.parameters())),
            }
            bundle = describe_folder(out, name, source=source, metrics=clean, eval_text=EVAL_TEXT)
            size = fetch_bytes(bundle)
            upload(out, output)
        return bundle.digest, clean, size


def textgen_recipe() -> TextgenRecipe:
    return TextgenRecipe()
