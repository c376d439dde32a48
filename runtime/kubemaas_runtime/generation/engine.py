"""``Decoder``: ONNX Runtime over an onnxruntime-genai decoder with a slot KV cache.

The model builder's decoder takes ``input_ids [B, T]``, ``attention_mask [B, total]`` and one
``past_key_values.{i}.key/value [B, kv_heads, past, head_size]`` pair per layer, and returns
``logits [B, T, vocab]`` and ``present.{i}.key/value``. Its attention is ONNX Runtime's
GroupQueryAttention, which takes each row's own length from the attention mask (``seqlens_k =
sum(mask) - 1``) and, when the past and present tensors are the same buffer, writes the new keys
and values in place at each row's position (onnxruntime-genai's ``past_present_share_buffer``).

So sequences of different lengths can share one decode step: each occupies a *slot* (a row of a
``[slots, kv_heads, context, head_size]`` buffer per layer), running sequences are kept in slots
``0..B-1`` (a finished one is replaced by the last, one row copy), and a step binds the first B
rows. A new sequence is prefilled alone in its slot and joins the next decode step: iteration-level
scheduling as in Orca (Yu et al., OSDI 2022) and vLLM, without paged attention (which ONNX
Runtime provides only on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kubemaas_runtime.bundle import BundleError
from kubemaas_runtime.generation.folder import DecoderShape
from kubemaas_runtime.generation.memory import Available, KVCacheSize, KVCacheTooLarge

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class Decoder:
    """One ONNX Runtime session and a KV buffer of ``slots`` rows of ``context`` positions.

    ``context`` is the model's context length, or ``max_model_len`` when that is smaller (vLLM's
    setting of the same name): the buffer takes ``2 * layers * slots * kv_heads * context *
    head_size`` floats, which for a real model's full context would not fit in memory.

    ``available``: the memory the buffer may take (``memory.available_memory``); a larger buffer
    raises ``KVCacheTooLarge`` before anything is allocated. None: not checked.

    Not thread-safe: one thread (the scheduler's) drives it.
    """

    def __init__(
        self,
        directory: Path,
        shape: DecoderShape,
        *,
        slots: int,
        max_model_len: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        available: Available | None = None,
    ) -> None:
        self.shape = shape
        self.slots = slots
        path = Path(directory) / shape.filename
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(intra_op_threads, inter_op_threads), providers=list(providers)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        past0 = shape.past_key % 0
        if past0 not in inputs or shape.input_ids not in inputs or shape.attention_mask not in inputs:
            raise BundleError(f"{path}: inputs {sorted(inputs)} lack {shape.input_ids}/{shape.attention_mask}/{past0}")
        dtype = _NUMPY_TYPES.get(inputs[past0].type)
        if dtype is None:
            raise BundleError(f"{path}: KV cache type {inputs[past0].type} is not supported (float or float16)")
        self.dtype = dtype
        self.position_ids = shape.position_ids if shape.position_ids in inputs else None
        self.capacity = min(shape.context_length, max_model_len or shape.context_length)
        self.kv_size = KVCacheSize(slots, self.capacity, shape.layers, shape.kv_heads, shape.head_size,
                                   np.dtype(dtype).itemsize)
        if available is not None and self.kv_size.bytes > available.bytes:
            raise KVCacheTooLarge(self.kv_size, available)
        kv_shape = (slots, shape.kv_heads, self.capacity, shape.head_size)
        self.keys = [np.zeros(kv_shape, dtype) for _ in range(shape.layers)]
        self.values = [np.zeros(kv_shape, dtype) for _ in range(shape.layers)]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.logits_index = self.output_names.index(shape.logits)

    @property
    def context_length(self) -> int:
        return self.capacity

    def _run(self, ids: np.ndarray, mask: np.ndarray, first: int, rows: int, positions: np.ndarray | None) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.shape.input_ids, ids)
        binding.bind_cpu_input(self.shape.attention_mask, mask)
        if self.position_ids is not None and positions is not None:
            binding.bind_cpu_input(self.position_ids, positions)
        outputs: dict[str, ort.OrtValue] = {}
        for layer in range(self.shape.layers):
            for past, present, buffer in (
                (self.shape.past_key, self.shape.present_key, self.keys[layer]),
                (self.shape.past_value, self.shape.present_value, self.values[layer]),
            ):
                value = ort.OrtValue.ortvalue_from_numpy(buffer[first : first + rows])
                binding.bind_ortvalue_input(past % layer, value)
                outputs[present % layer] = value
        for name in self.output_names:
            if name in outputs:
                binding.bind_ortvalue_output(name, outputs[name])
            else:
                binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        logits: np.ndarray = binding.get_outputs()[self.logits_index].numpy()
        return logits

    def prefill(self, slot: int, prompt: Sequence[int]) -> np.ndarray:
        """Run ``prompt`` (length P >= 1, P <= context) into ``slot``'s empty cache; logits ``[vocab]`` of its last token."""
        n = len(prompt)
        if not 1 <= n <= self.context_length:
            raise ValueError(f"prompt of {n} tokens: need 1..{self.context_length}")
        ids = np.asarray([prompt], dtype=np.int64)
        mask = np.ones((1, n), dtype=np.int64)
        positions = np.arange(n, dtype=np.int64)[None, :]
        last: np.ndarray = self._run(ids, mask, slot, 1, positions)[0, -1]
        return last

    def score(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits ``[T, vocab]`` at every position of ``tokens`` (run in slot 0; for perplexity)."""
        n = len(tokens)
        if not 1 <= n <= self.context_length:
            raise ValueError(f"{n} tokens: need 1..{self.context_length}")
        ids = np.asarray([tokens], dtype=np.int64)
        logits: np.ndarray = self._run(ids, np.ones((1, n), np.int64), 0, 1, np.arange(n, dtype=np.int64)[None, :])[0]
        return logits

    def decode(self, tokens: Sequence[int], lengths: Sequence[int]) -> np.ndarray:
        """One step for slots ``0..B-1``: row b holds ``lengths[b]`` cached tokens and appends ``tokens[b]``.

        Returns logits ``[B, vocab]``. Every ``lengths[b] + 1`` must be <= context.
        """
        rows = len(tokens)
        width = max(lengths) + 1
        if width > self.context_length:
            raise ValueError(f"a sequence would exceed the context of {self.context_length} tokens")
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        lens = np.asarray(lengths, dtype=np.int64)
        mask = (np.arange(width)[None, :] <= lens[:, None]).astype(np.int64)
        return self._run(ids, mask, 0, rows, lens[:, None])[:, -1]

    def warm_up(self) -> None:
        """First runs allocate ONNX Runtime's buffers: prefill a short prompt, decode at every batch width."""
        prompt = list(range(max(1, min(16, self.context_length - 1))))  # room for one decoded token
        for slot in range(self.slots):
            self.prefill(slot, prompt)
        width = 1
        while width <= self.slots:
            self.decode([0] * width, [len(prompt)] * width)
            width *= 2

    def move(self, source: int, target: int, length: int) -> None:
        """Copy slot ``source``'s first ``length`` cached positions into slot ``target`` (compaction)."""
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[target, :, :length] = buffer[source, :, :length]
