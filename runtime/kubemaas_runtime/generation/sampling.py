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


SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
"""Seeds accepted from clients: any signed or unsigned 64-bit integer (vLLM takes the signed range)."""


def generator(seed: int | None) -> np.random.Generator:
    """A request's random generator; a negative ``seed`` is read as its unsigned 64-bit pattern
    (numpy takes only non-negative seeds), so ``-1`` and ``2**64 - 1`` draw the same tokens.

    Raises ``ValueError`` for a seed outside ``[SEED_MIN, SEED_MAX]``.
    """
    if seed is None:
        return np.random.default_rng()
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed {seed} is outside the 64-bit range [{SEED_MIN}, {SEED_MAX}]")
    return np.random.default_rng(seed % 2**64)


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
