"""Continuous batching: iteration-level scheduling of sequences over one ``Decoder``.

One thread owns the decoder. Each iteration it (1) drops sequences whose client went away,
(2) admits waiting sequences into free slots, prefilling each (its first token is sampled from
the prefill's logits), and (3) runs ONE decode step for every running sequence. A request that
arrives while others generate therefore joins at the next step instead of waiting for the batch
to finish (Orca's iteration-level scheduling; vLLM's continuous batching). The waiting queue is
bounded: ``submit`` raises ``QueueFull`` beyond ``max_waiting`` (the server answers 503 with
Retry-After).

Deltas reach the asyncio side in one batch per iteration: the scheduler hands the list of
``(sink, delta)`` pairs to ``deliver`` (the service makes that one ``loop.call_soon_threadsafe``
that runs every sink, an ``asyncio.Queue.put_nowait``), so the event loop wakes once per decode
step rather than once per sequence, and never blocks on ONNX Runtime.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kubemaas_runtime.generation.engine import Decoder
from kubemaas_runtime.generation.metrics import GenerationMetrics
from kubemaas_runtime.generation.sampling import SamplingParams, generator, sample
from kubemaas_runtime.generation.tokenizer import IncrementalDetokenizer, TextTokenizer

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More than ``max_waiting`` sequences are waiting for a slot."""


@dataclass(frozen=True)
class Delta:
    """What one step produced for one sequence: new text, tokens so far, and why it ended (or None)."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None


Sink = Callable[[Delta], None]
"""Runs wherever ``deliver`` runs it (the event loop); must not block."""
Deliver = Callable[[list[tuple[Sink, Delta]]], None]
"""Called from the scheduler thread once per iteration with that iteration's deltas."""


def deliver_now(batch: list[tuple[Sink, Delta]]) -> None:
    """Run every sink in the calling thread (tests, benchmarks without an event loop)."""
    for sink, delta in batch:
        sink(delta)


_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One request's generation state (owned by the scheduler thread once submitted)."""

    prompt: list[int]
    params: SamplingParams
    sink: Sink
    detokenizer: IncrementalDetokenizer
    eos: frozenset[int]
    id: int = field(default_factory=lambda: next(_ids))
    arrival: float = field(default_factory=time.perf_counter)
    output: list[int] = field(default_factory=list)
    length: int = 0
    """Tokens in this sequence's KV cache."""
    text: str = ""
    """Everything generated so far (stop strings cut off)."""
    sent: int = 0
    """Characters of ``text`` already handed to the sink."""
    cancelled: bool = False
    """Set by ``cancel`` when the client went away."""
    finished: str | None = None
    """The finish reason once the sequence is done."""
    last_token_at: float = 0.0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = generator(self.params.seed)


class Scheduler:
    """The decode loop; ``start()`` it, ``submit()`` sequences from any thread, ``stop()`` at shutdown."""

    def __init__(
        self,
        decoder: Decoder,
        tokenizer: TextTokenizer,
        metrics: GenerationMetrics,
        *,
        max_waiting: int,
        deliver: Deliver = deliver_now,
    ) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_waiting = max_waiting
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.lock = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.steps = 0
        self.deliver = deliver
        self.outbox: list[tuple[Sink, Delta]] = []

    # -- any thread ------------------------------------------------------------------------------
    def new_sequence(self, prompt: list[int], params: SamplingParams, sink: Sink, eos: frozenset[int]) -> Sequence:
        return Sequence(prompt, params, sink, IncrementalDetokenizer(self.tokenizer), eos)

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; raises ``QueueFull`` when every slot is taken and ``max_waiting`` sequences
        already wait for one. Queued sequences that free slots will take at the next iteration do not
        count as waiting, so ``max_waiting=0`` still serves up to ``slots`` requests at once."""
        with self.lock:
            free = max(0, self.decoder.slots - len(self.running))  # running: read across threads, at worst stale
            if len(self.waiting) >= self.max_waiting + free:
                raise QueueFull(f"all {self.decoder.slots} slots are busy and {len(self.waiting) - free} requests "
                                f"are waiting for one (max_waiting={self.max_waiting})")
            self.waiting.append(seq)
            self.metrics.waiting.set(len(self.waiting))
            self.lock.notify()

    def cancel(self, seq: Sequence) -> None:
        """Stop generating for ``seq`` at the next step (the client went away)."""
        seq.cancelled = True
        with self.lock:
            self.lock.notify()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="kubemaas-decode", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # -- the scheduler thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and not self.waiting and not self.running:
                    self.lock.wait()
                if self.stopping:
                    break
                admitted = self._take_waiting()
            try:
                self._iteration(admitted)
            except Exception as exc:  # fail every sequence in flight, keep serving new ones
                log.exception("decode step failed")
                for seq in {*self.running, *admitted}:
                    if seq.finished is None:
                        seq.finished = "error"
                        self._send(seq, Delta("", len(seq.output), "error", error=f"{type(exc).__name__}: {exc}"))
                self.running.clear()
            self._flush()
        for seq in [*self.running, *self.waiting]:
            self._send(seq, Delta("", len(seq.output), "abort", error="the server is shutting down"))
        self._flush()

    def _send(self, seq: Sequence, delta: Delta) -> None:
        self.outbox.append((seq.sink, delta))

    def _flush(self) -> None:
        if self.outbox:
            batch, self.outbox = self.outbox, []
            self.deliver(batch)

    def _take_waiting(self) -> list[Sequence]:
        free = self.decoder.slots - len(self.running)
        taken: list[Sequence] = []
        while self.waiting and len(taken) < free:
            taken.append(self.waiting.popleft())
        self.metrics.waiting.set(len(self.waiting))
        return taken

    def _iteration(self, admitted: list[Sequence]) -> None:
        self._retire()  # clients that went away since the last step
        for seq in admitted:
            if seq.cancelled:
                self.metrics.aborted.inc()
                continue
            slot = len(self.running)
            self.running.append(seq)
            logits = self.decoder.prefill(slot, seq.prompt)
            seq.length = len(seq.prompt)
            self.metrics.prompt_tokens.inc(len(seq.prompt))
            self._accept(seq, logits)
        self._retire()
        if not self.running:
            self.metrics.running.set(0)
            return
        self.metrics.running.set(len(self.running))
        tokens = [seq.output[-1] for seq in self.running]
        lengths = [seq.length for seq in self.running]
        logits = self.decoder.decode(tokens, lengths)
        self.steps += 1
        self.metrics.decode_steps.inc()
        self.metrics.batch_size.observe(len(self.running))
        for row, seq in enumerate(self.running):
            seq.length += 1
            self._accept(seq, logits[row])
        self._retire()

    def _accept(self, seq: Sequence, logits: np.ndarray) -> None:
        """Sample a token for ``seq``, send its text delta, and mark it finished when it is."""
        token = sample(logits, seq.params, seq.rng)
        now = time.perf_counter()
        if not seq.output:
            self.metrics.ttft.observe(now - seq.arrival)
        else:
            self.metrics.tpot.observe(now - seq.last_token_at)
        seq.last_token_at = now
        seq.output.append(token)
        self.metrics.generation_tokens.inc()
        finish: str | None = None
        if token in seq.eos and not seq.params.ignore_eos:
            finish = "stop"
        else:
            seq.text += seq.detokenizer.push(token)
            cut = _stop_at(seq.text, seq.params.stop, seq.sent)
            if cut is not None:
                seq.text, finish = seq.text[:cut], "stop"
        if finish is None and len(seq.output) >= seq.params.max_tokens:
            finish = "length"
        if finish is None and seq.length + 1 >= self.decoder.context_length:
            finish = "length"
        # hold back what could still become a stop string
        hold = 0 if finish else max((len(s) - 1 for s in seq.params.stop), default=0)
        upto = max(seq.sent, len(seq.text) - hold)
        delta = seq.text[seq.sent : upto]
        seq.sent = upto
        if finish is not None:
            seq.finished = finish
            self.metrics.finished.labels(self.metrics.model, finish).inc()
            self.metrics.e2e.observe(now - seq.arrival)
        self._send(seq, Delta(delta, len(seq.output), finish))

    def _retire(self) -> None:
        """Remove finished or cancelled sequences, keeping the running ones in slots 0..B-1."""
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if seq.finished is None and not seq.cancelled:
                i += 1
                continue
            if seq.finished is None:
                self.metrics.aborted.inc()
            last = self.running.pop()
            if last is not seq:
                self.decoder.move(len(self.running), i, last.length)
                self.running[i] = last
        self.metrics.running.set(len(self.running))


def _stop_at(text: str, stops: tuple[str, ...], sent: int) -> int | None:
    """Index where the earliest stop string starts in ``text`` (searching from what could be new), or None."""
    if not stops:
        return None
    longest = max(len(s) for s in stops)
    start = max(0, sent - longest)
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None
