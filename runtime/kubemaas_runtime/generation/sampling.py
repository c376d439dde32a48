"""Next-token sampling: greedy, temperature, top-k and top-p (nucleus), with a per-request seed.

The order (temperature, then top-k, then top-p over what is left) is the one Hugging Face's
``generate`` and vLLM apply. Each request owns its ``numpy.random.Generator``, so a fixed seed
reproduces the same tokens whatever else is running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """What the client asked for. ``temperature == 0`` is greedy; ``top_k <= 0`` and ``top_p == 1`` are off."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (vLLM's extension; benchmarks use it for fixed lengths)."""


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id from ``logits`` (``[vocab]``, any float dtype)."""
    if params.temperature <= 0.0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / params.temperature
    candidates = np.arange(scores.shape[0])
    if 0 < params.top_k < scores.shape[0]:
        candidates = np.argpartition(-scores, params.top_k - 1)[: params.top_k]
        scores = scores[candidates]
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        candidates, probs = candidates[keep], probs[keep] / probs[keep].sum()
    return int(candidates[rng.choice(len(probs), p=probs)])
