"""The adaptive batcher: concurrent requests merged along the model's declared batch axis.

Each request waits on its own future. One worker task takes requests in arrival order and
merges those whose other dimensions agree, up to ``max_rows`` rows along ``batch_axis``
(``max_batch_size``, or the cap ``tuning`` measured at warm-up; a single request bigger than
that runs alone). Without a batch axis ``max_rows`` is 1 and every request runs alone. The
collector stops when the batch is full, or when ONNX Runtime is idle and either no other
request is on its way in (nobody could join, so a lone request never waits) or
``max_delay_ms`` has passed since collection started (the deadline shrinks as requests
arrive). While a batch runs, the next one keeps collecting: on a busy server the batches grow
by themselves. ONNX Runtime runs in a dedicated thread so the event loop keeps reading requests.

A merged run is trusted only when every output has exactly the merged rows on the batch
axis; otherwise, and when a merged run fails, its requests are re-run one by one so each gets
its own answer (or its own error: a bad input fails only its sender). A model whose outputs do
not keep the rows is never merged again. (MLServer's adaptive batcher and Triton's dynamic
batcher are the precedents for the queue; the per-request re-run is ours.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
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
    """One request's answer."""

    outputs: Feeds
    """Exactly this request's rows of every output."""
    compute_s: float
    """ONNX Runtime time of the call the request ran in, in seconds."""
    batch_rows: int
    """Rows of that call."""
    queue_s: float = 0.0
    """Seconds between submission and the start of the call."""


@dataclass
class _Pending:
    inputs: Feeds
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[BatchResult] = field(repr=False)
    submitted: float = 0.0


@dataclass
class _Outcome:
    """What the inference thread hands back for one batch."""

    results: list[BatchResult | ServingError]
    calls: list[tuple[int, float]]
    """Rows and seconds of every ONNX Runtime call made (one when the merged run was trusted)."""
    rerun: str | None = None
    """Why the batch was re-run per request: ``failed`` or ``mismatch``; None when it was not."""


def merge_key(inputs: Feeds, axis: int | None) -> tuple[Any, ...]:
    """Requests merge when their inputs agree on everything but the batch axis. The codec
    hands inputs over in the model's order, so the names line up."""
    if axis is None:
        return ()
    return tuple([(name, a.shape[:axis] + a.shape[axis + 1 :], a.dtype) for name, a in inputs.items()])


def _as_serving_error(exc: BaseException) -> ServingError:
    if isinstance(exc, ServingError):
        return exc
    log.warning("inference raised %s: %s", type(exc).__name__, exc)
    return InferenceFailed(f"inference failed: {exc}")


class Batcher:
    """The queue and the inference thread (see the module docstring).

    ``on_batch(rows, seconds)`` is called for every ONNX Runtime call, ``on_rerun(reason)`` for every
    batch re-run per request, ``on_unmergeable(message)`` once when merging is switched off."""

    def __init__(
        self,
        runner: Runner,
        *,
        batch_axis: int | None = 0,
        max_batch_size: int = 32,
        max_delay_ms: float = 2.0,
        max_queue: int = 256,
        retry_after_s: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
        on_rerun: Callable[[str], None] | None = None,
        on_unmergeable: Callable[[str], None] | None = None,
    ) -> None:
        self._runner = runner
        self.batch_axis = batch_axis
        self.max_rows = max_batch_size if batch_axis is not None else 1
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_rerun = on_rerun
        self._on_unmergeable = on_unmergeable
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

    @property
    def full(self) -> bool:
        """True when a new request would be refused (lets callers refuse before reading a body)."""
        return len(self._queue) >= self.max_queue

    def overloaded(self) -> Overloaded:
        """The 503 a full queue answers."""
        return Overloaded(
            f"the queue holds {len(self._queue)} requests (max_queue={self.max_queue}); retry later",
            self.retry_after_s,
        )

    async def start(self) -> None:
        """Create the queue, the inference thread and the worker task in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubemaas-ort")
        self._worker = self._loop.create_task(self._work(), name="kubemaas-batcher")

    async def stop(self) -> None:
        """Stop the worker, answer 503 to whatever is still queued, and join the inference thread."""
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
        """Queue one request (which may carry several rows) and wait for its own rows back.

        Raises ``Overloaded`` (503) when the queue is full, ``Unavailable`` when stopped, and
        the request's own ``ServingError`` when its inference failed."""
        if self._wake is None or self._loop is None:
            raise Unavailable("the batcher is not running")
        if len(self._queue) >= self.max_queue:
            raise self.overloaded()
        future: asyncio.Future[BatchResult] = self._loop.create_future()
        self._queue.append(_Pending(inputs, rows, merge_key(inputs, self.batch_axis), future, time.perf_counter()))
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
            batch, _ = await self._collect()
            batch = [p for p in batch if not p.future.done()]  # a client that went away
            if not batch:
                continue
            self._running += 1
            self._dispatch(batch, sum(p.rows for p in batch))

    def _dispatch(self, batch: list[_Pending], rows: int) -> None:
        """Run the batch in the inference thread, which hands the outcome straight back to the
        loop (one wake-up, where ``run_in_executor`` takes three loop turns to reach ``_finish``)."""
        loop = self._loop
        assert loop is not None
        assert self._executor is not None

        def job() -> None:
            outcome: _Outcome | BaseException
            try:
                outcome = self._run(batch, rows)
            except BaseException as exc:  # a bug in _run itself: the loop fails the batch with it
                outcome = exc
            loop.call_soon_threadsafe(self._finish, outcome, batch)

        self._executor.submit(job)

    def _run_one(self, p: _Pending, started: float) -> BatchResult | ServingError:
        try:
            outputs, seconds = self._runner(p.inputs)
        except Exception as exc:  # classified once, here, for the one request it belongs to
            return _as_serving_error(exc)
        return BatchResult(outputs, seconds, p.rows, started - p.submitted)

    def _run(self, batch: list[_Pending], rows: int) -> _Outcome:
        """In the ONNX Runtime thread: merge, run, check, split back (or re-run one by one)."""
        started = time.perf_counter()
        if len(batch) == 1:
            return self._one_by_one(batch, started, [], None)
        axis = self.batch_axis
        assert axis is not None  # max_rows is 1 without a batch axis, so nothing merges
        feeds = {name: np.concatenate([p.inputs[name] for p in batch], axis=axis) for name in batch[0].inputs}
        try:
            outputs, seconds = self._runner(feeds)
        except Exception as exc:  # one request's bad input must not fail its batch-mates
            log.info("a merged run of %d requests (%d rows) failed (%s); re-running them one by one", len(batch), rows, exc)
            return self._one_by_one(batch, started, [(rows, time.perf_counter() - started)], "failed")
        bad = [n for n, v in outputs.items() if v.ndim <= axis or v.shape[axis] != rows]
        if bad:
            name = bad[0]
            shape = list(outputs[name].shape)
            log.warning(
                "output %r has shape %s after merging %d rows along axis %d: the model does not keep rows "
                "independent, so requests are no longer merged", name, shape, rows, axis,
            )
            return self._one_by_one(batch, started, [(rows, seconds)], "mismatch")
        results: list[BatchResult | ServingError] = []
        start = 0
        index: list[slice] = [slice(None)] * (axis + 1)
        for p in batch:
            index[axis] = slice(start, start + p.rows)
            where = tuple(index)
            results.append(BatchResult({n: v[where] for n, v in outputs.items()}, seconds, rows, started - p.submitted))
            start += p.rows
        return _Outcome(results, [(rows, seconds)])

    def _one_by_one(
        self, batch: list[_Pending], started: float, calls: list[tuple[int, float]], rerun: str | None
    ) -> _Outcome:
        results = [self._run_one(p, started) for p in batch]
        for p, r in zip(batch, results, strict=True):
            calls.append((p.rows, r.compute_s if isinstance(r, BatchResult) else 0.0))
        return _Outcome(results, calls, rerun)

    def _finish(self, outcome: _Outcome | BaseException, batch: list[_Pending]) -> None:
        self._running -= 1
        assert self._wake is not None
        self._wake.set()
        if isinstance(outcome, BaseException):  # a bug in _run itself, not in the model
            error = _as_serving_error(outcome)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        if self._on_batch is not None:
            for rows, seconds in outcome.calls:
                self._on_batch(rows, seconds)
        if outcome.rerun is not None:
            if self._on_rerun is not None:
                self._on_rerun(outcome.rerun)
            if outcome.rerun == "mismatch" and self.max_rows > 1:
                self.max_rows = 1
                if self._on_unmergeable is not None:
                    self._on_unmergeable(
                        "requests are no longer merged: a merged run's outputs did not have exactly the merged "
                        f"rows on batch axis {self.batch_axis}"
                    )
        for p, result in zip(batch, outcome.results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, ServingError):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)
