"""The adaptive batcher: concurrent requests merged along the batch axis.

Each request waits on its own future. One worker task takes requests in arrival order and
merges those whose non-batch dimensions agree, up to ``max_rows`` rows (``max_batch_size``, or
the cap ``tuning`` measured at warm-up; a single request bigger than that runs alone). It stops
collecting when the batch is full, or when ONNX Runtime is idle and either no other request
is on its way in (nobody could join, so a lone request never waits) or ``max_delay_ms`` has
passed since collection started (the deadline shrinks as requests arrive). While a batch runs,
the next one keeps collecting: on a busy server the batches grow by themselves. ONNX Runtime
runs in a dedicated thread so the event loop keeps reading requests; the outputs are split
back so every request gets exactly its own rows, and a failed batch sets the exception on
every waiting future.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from kubemaas_runtime.serving.errors import InferenceFailed, Overloaded, ServingError, Unavailable

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], tuple[Feeds, float]]
"""Runs a (merged) batch; returns the outputs and the compute time in seconds."""
T = TypeVar("T")


@dataclass
class BatchResult:
    outputs: Feeds
    """Exactly this request's rows of every output."""
    compute_s: float
    """ONNX Runtime time of the whole batch the request ran in."""
    batch_rows: int


@dataclass
class _Pending:
    inputs: Feeds
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[BatchResult] = field(repr=False)


def _merge_key(inputs: Feeds) -> tuple[Any, ...]:
    """Requests merge when their inputs agree on everything but the batch axis. The codec
    hands inputs over in the model's order, so the names line up."""
    return tuple([(name, a.shape[1:], a.dtype) for name, a in inputs.items()])


class Batcher:
    def __init__(
        self,
        runner: Runner,
        *,
        max_batch_size: int = 32,
        max_delay_ms: float = 2.0,
        max_queue: int = 256,
        retry_after_s: int = 1,
        batchable: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._runner = runner
        self.max_rows = max_batch_size if batchable else 1
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        # The deque, the event and the worker task are created in start(), inside the running
        # loop: asyncio primitives and futures belong to the loop that awaits them, and
        # create_app() runs before uvicorn creates its loop.
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0
        self._arriving = 0

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubemaas-ort")
        self._worker = self._loop.create_task(self._work(), name="kubemaas-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(Unavailable("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def in_ort_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the inference thread, serialized with the batches (for warm-up
        measurements: they must not share the core with a batch)."""
        if self._loop is None or self._executor is None:
            raise Unavailable("the batcher is not running")
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def arriving(self) -> None:
        """A request started arriving (its body is being read); the collector may wait for it."""
        self._arriving += 1

    def arrived(self) -> None:
        """Pair of ``arriving()``: the request was submitted or failed before that."""
        self._arriving -= 1

    async def submit(self, inputs: Feeds, rows: int) -> BatchResult:
        """Queue one request (which may carry several rows) and wait for its own rows back."""
        if self._wake is None or self._loop is None:
            raise Unavailable("the batcher is not running")
        if len(self._queue) >= self.max_queue:
            raise Overloaded(
                f"the queue holds {len(self._queue)} requests (max_queue={self.max_queue}); retry later",
                self.retry_after_s,
            )
        future: asyncio.Future[BatchResult] = self._loop.create_future()
        self._queue.append(_Pending(inputs, rows, _merge_key(inputs), future))
        self._wake.set()
        return await future

    async def _sleep(self, seconds: float | None) -> None:
        assert self._wake is not None
        self._wake.clear()
        if seconds is None:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _take(self, batch: list[_Pending], rows: int) -> tuple[int, bool]:
        """Move the requests that fit from the queue's head; True when the batch is closed."""
        q = self._queue
        while q:
            head = q[0]
            if batch and (head.key != batch[0].key or rows + head.rows > self.max_rows):
                return rows, True
            batch.append(q.popleft())
            rows += head.rows
            if rows >= self.max_rows:
                return rows, True
        return rows, False

    async def _collect(self) -> tuple[list[_Pending], int]:
        assert self._loop is not None
        while not self._queue:
            await self._sleep(None)
        batch: list[_Pending] = []
        rows, closed = self._take(batch, 0)
        deadline: float | None = None
        while True:
            if self._running:
                # ONNX Runtime is busy with the previous batch: this one cannot start anyway.
                await self._sleep(None)
                if not closed:
                    rows, closed = self._take(batch, rows)
                continue
            if closed or self._arriving <= 0:
                return batch, rows
            if deadline is None:
                deadline = self._loop.time() + self.max_delay_s
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return batch, rows
            await self._sleep(remaining)
            rows, closed = self._take(batch, rows)

    async def _work(self) -> None:
        assert self._loop is not None
        assert self._executor is not None
        while True:
            batch, rows = await self._collect()
            batch = [p for p in batch if not p.future.done()]  # a client that went away
            if not batch:
                continue
            self._running += 1
            job = self._loop.run_in_executor(self._executor, self._run, [p.inputs for p in batch], rows)
            job.add_done_callback(lambda f, b=batch, r=rows: self._finish(f, b, r))  # type: ignore[misc]

    def _run(self, parts: list[Feeds], rows: int) -> tuple[list[Feeds], float]:
        """In the ONNX Runtime thread: merge, run, split back."""
        if len(parts) == 1:
            outputs, seconds = self._runner(parts[0])
            return [outputs], seconds
        feeds = {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
        outputs, seconds = self._runner(feeds)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != rows:
                raise InferenceFailed(
                    f"output {name!r} has leading dimension {value.shape[:1]} for a batch of {rows} rows; "
                    "the model cannot be batched (set max_batch_size=1)"
                )
        split: list[Feeds] = []
        start = 0
        for p in parts:
            n = next(iter(p.values())).shape[0]
            split.append({name: value[start : start + n] for name, value in outputs.items()})
            start += n
        return split, seconds

    def _finish(self, job: asyncio.Future[tuple[list[Feeds], float]], batch: list[_Pending], rows: int) -> None:
        self._running -= 1
        assert self._wake is not None
        self._wake.set()
        if self._on_batch is not None:
            self._on_batch(rows)
        exc = job.exception()
        if exc is not None:
            if not isinstance(exc, ServingError):
                log.warning("batch of %d rows failed: %s", rows, exc)
                exc = InferenceFailed(f"inference failed: {exc}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        outputs, seconds = job.result()
        for p, out in zip(batch, outputs, strict=True):
            if not p.future.done():
                p.future.set_result(BatchResult(out, seconds, rows))
