"""``GenerationService``: load a text-generation bundle and turn requests into token streams.

It owns the tokenizer, the decoder and the scheduler thread; handlers call ``prepare`` (tokenize,
check limits: all before any work is queued) and iterate ``stream`` (deltas as they are decoded;
leaving the iteration early, e.g. on client disconnect, cancels the sequence).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from kubemaas_runtime.bundle import Bundle, BundleError, load_bundle
from kubemaas_runtime.generation.engine import Decoder
from kubemaas_runtime.generation.folder import read_genai_config
from kubemaas_runtime.generation.memory import KVCacheTooLarge, available_memory
from kubemaas_runtime.generation.metrics import GenerationMetrics
from kubemaas_runtime.generation.providers import choose_providers
from kubemaas_runtime.generation.sampling import SamplingParams
from kubemaas_runtime.generation.scheduler import Delta, QueueFull, Scheduler, Sequence, Sink
from kubemaas_runtime.generation.settings import GenerationSettings
from kubemaas_runtime.generation.tokenizer import TextTokenizer


class RequestError(ValueError):
    """A request that cannot be served as asked; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Prepared:
    prompt: list[int]
    params: SamplingParams


class GenerationService:
    """A loaded text-generation model and its running scheduler."""

    def __init__(self, settings: GenerationSettings, bundle: Bundle, name: str) -> None:
        assert bundle.manifest.generation is not None
        self.settings = settings
        self.bundle = bundle
        self.name = name
        self.spec = bundle.manifest.generation
        shape = read_genai_config(bundle.path)
        self.providers = choose_providers(
            settings.provider, ort.get_available_providers(), os.environ, Path("/dev/nvidiactl").exists()
        )
        self.tokenizer = TextTokenizer(bundle.path)
        try:
            self.decoder = Decoder(
                bundle.path,
                shape,
                slots=settings.max_batch_size,
                max_model_len=settings.max_model_len,
                providers=self.providers,
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.inter_op_threads,
                available=available_memory(),
            )
        except KVCacheTooLarge as exc:
            raise ValueError(kv_cache_refusal(exc)) from exc
        self.eos = frozenset(self.spec.eos_token_ids)
        self.metrics = GenerationMetrics(name)
        self.scheduler = Scheduler(self.decoder, self.tokenizer, self.metrics, max_waiting=settings.max_waiting)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.created = int(os.path.getmtime(bundle.path / "model.json"))

    @property
    def context_length(self) -> int:
        return self.decoder.context_length

    def start(self) -> None:
        """Warm up, then start the decode thread; call from the event loop that serves requests."""
        loop = self.loop = asyncio.get_running_loop()

        def deliver(batch: list[tuple[Sink, Delta]]) -> None:
            loop.call_soon_threadsafe(_run_sinks, batch)

        self.scheduler.deliver = deliver
        self.decoder.warm_up()
        sys.setswitchinterval(self.settings.switch_interval_s)
        self.scheduler.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.scheduler.stop()

    def prepare(self, prompt: str | list[int], max_tokens: int | None, params: Mapping[str, Any]) -> Prepared:
        """Tokenize (or, for token ids, range-check) the prompt and check prompt + output length against
        the context, before any work. Raises ``RequestError`` naming the field.

        A prompt too long to fit whatever its tokens is refused before it is tokenized: tokenizing
        runs on the event loop, and megabytes of text would hold every stream up for seconds.
        """
        limit = self.context_length
        if isinstance(prompt, list):
            vocab = self.spec.vocab_size
            bad = next((t for t in prompt if not 0 <= t < vocab), None)
            if bad is not None:
                raise RequestError(f"prompt token id {bad} is outside this model's vocabulary [0, {vocab})", "prompt")
        elif len(prompt) > 4 * self.tokenizer.max_token_chars * limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, your prompt has {len(prompt)} "
                f"characters, more than {limit} tokens of this tokenizer can hold. Please reduce the length of "
                "the prompt.",
                "prompt",
                code="context_length_exceeded",
            )
        ids = list(prompt) if isinstance(prompt, list) else self.tokenizer.encode(prompt)
        if not ids:
            raise RequestError("the prompt is empty: it must contain at least one token", "prompt")
        if len(ids) >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, your prompt has {len(ids)} "
                "tokens, leaving no room for the completion. Please reduce the length of the prompt.",
                "prompt",
                code="context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, limit - len(ids))
        if len(ids) + max_tokens > limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion). "
                "Please reduce the length of the prompt or of max_tokens.",
                "max_tokens",
                code="context_length_exceeded",
            )
        return Prepared(ids, SamplingParams(max_tokens=max_tokens, **params))

    def open(self, prepared: Prepared) -> AsyncIterator[Delta]:
        """Queue the sequence now (``QueueFull`` when the waiting queue is full) and return its deltas.

        Leaving the iteration before the last delta (client disconnect) cancels the sequence, which
        then leaves the running batch at the next step.
        """
        queue: asyncio.Queue[Delta] = asyncio.Queue()
        seq: Sequence = self.scheduler.new_sequence(prepared.prompt, prepared.params, queue.put_nowait, self.eos)
        self.scheduler.submit(seq)
        return self._deltas(seq, queue)

    async def _deltas(self, seq: Sequence, queue: asyncio.Queue[Delta]) -> AsyncIterator[Delta]:
        try:
            while True:
                delta = await queue.get()
                while not queue.empty() and delta.finish_reason is None:
                    # the consumer fell behind: merge what is queued into one delta (one SSE write)
                    later = queue.get_nowait()
                    delta = Delta(delta.text + later.text, later.completion_tokens, later.finish_reason, later.error)
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            if seq.finished is None:
                self.scheduler.cancel(seq)


def _run_sinks(batch: list[tuple[Sink, Delta]]) -> None:
    for sink, delta in batch:
        sink(delta)


def kv_cache_refusal(exc: KVCacheTooLarge) -> str:
    """The startup error for a KV cache that does not fit: the setting, its value, bytes needed and
    available, and the largest value that fits (0 when not even one slot does)."""
    size, available = exc.size, exc.available
    fits = available.bytes // size.slot_bytes
    return (f"KUBEMAAS_MAX_BATCH_SIZE (max_batch_size) {size.slots}: the KV cache needs {size.bytes} bytes "
            f"({size.bytes / 2**30:.1f} GiB: {size.formula()}) but {available.bytes} bytes "
            f"({available.bytes / 2**30:.1f} GiB) are available ({available.source}); at most {fits} slots fit "
            f"at {size.positions} positions: lower KUBEMAAS_MAX_BATCH_SIZE, or KUBEMAAS_MAX_MODEL_LEN (max_model_len) "
            f"to shorten every slot, or give the container more memory")


def load_service(settings: GenerationSettings) -> GenerationService:
    """Load and verify the bundle at ``settings.model_dir``; BundleError when it is not text generation,
    ValueError naming ``KUBEMAAS_MAX_BATCH_SIZE`` when its KV cache does not fit in the available memory."""
    bundle = load_bundle(settings.model_dir)
    if bundle.manifest.task != "text-generation":
        raise BundleError(f"{settings.model_dir}: task {bundle.manifest.task}, not text-generation")
    return GenerationService(settings, bundle, settings.model_name or bundle.manifest.name)


__all__ = ["GenerationService", "Prepared", "QueueFull", "RequestError", "load_service"]
