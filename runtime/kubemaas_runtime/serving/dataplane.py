"""The data plane: one served model, its batcher, admission, in-flight accounting, statistics
and readiness. Every protocol surface (v2, v1, a future gRPC or generation endpoint) goes
through ``admission()`` and ``infer()`` here, never past them into the batcher.

One model per server (and so per pod) is the design: no model repository, no model control.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from kubemaas_runtime.bundle import EVAL_SET
from kubemaas_runtime.serving.batching import Batcher, BatchResult, Feeds
from kubemaas_runtime.serving.budget import ByteBudget
from kubemaas_runtime.serving.errors import InvalidInput, NotFound, ServingError, Unavailable
from kubemaas_runtime.serving.metrics import Metrics
from kubemaas_runtime.serving.model import Model
from kubemaas_runtime.serving.settings import ServingSettings
from kubemaas_runtime.serving.stats import ModelStats
from kubemaas_runtime.serving.tuning import Tuning, tune

log = logging.getLogger(__name__)

SERVER_NAME = "kubemaas"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration"]
"""Only what this server implements (Triton's names for them)."""

TRITON_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}
"""v2 datatypes whose Triton config name is not ``TYPE_<datatype>``."""


def batch_rows(tensors: Feeds, axis: int | None) -> int:
    """Rows a request carries along the batch axis (1 without one). Raises ``InvalidInput``
    when inputs disagree."""
    if axis is None:
        return 1
    if len(tensors) == 1:
        return int(next(iter(tensors.values())).shape[axis])
    rows = {a.shape[axis] for a in tensors.values() if a.ndim > axis}
    if len(rows) != 1:
        raise InvalidInput(f"inputs disagree on the batch size (dimension {axis}): {sorted(rows)}")
    return int(rows.pop())


class Admission:
    """The context manager ``DataPlane.admission`` returns (shared: it keeps no per-request state)."""

    __slots__ = ("plane",)

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def __enter__(self) -> None:
        plane = self.plane
        if not plane.ready:
            raise Unavailable(f"model {plane.model.name!r} is not ready yet")
        if plane.batcher.full:
            raise plane.batcher.overloaded()
        plane.in_flight += 1

    def __exit__(self, *_: object) -> None:
        self.plane.in_flight -= 1


class Arrival:
    """The context manager ``DataPlane.arrival`` returns."""

    __slots__ = ("batcher",)

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher

    def __enter__(self) -> None:
        self.batcher.arriving()

    def __exit__(self, *_: object) -> None:
        self.batcher.arrived()


class DataPlane:
    """Serves one ``Model``; see the module docstring."""

    def __init__(self, settings: ServingSettings, model: Model) -> None:
        self.settings = settings
        self.model = model
        self.metrics = Metrics(model.name)
        self.stats = ModelStats()
        self.batching_reason = model.batching.reason
        self.batcher = Batcher(
            model.run,
            batch_axis=model.batching.axis,
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_delay_ms,
            max_queue=settings.max_queue,
            retry_after_s=settings.retry_after_s,
            on_batch=self._executed,
            on_rerun=self.metrics.batch_reruns_by_reason,
            on_unmergeable=self._unmergeable,
        )
        if model.batching.axis is not None and settings.max_batch_size == 1:
            self.batching_reason = "requests are not merged: max_batch_size is 1"
        self.buffered = ByteBudget(settings.max_buffered_bytes, settings.retry_after_s)
        self.in_flight = 0
        """Infer requests admitted and not yet answered."""
        self.metrics.track_queue(lambda: self.batcher.depth)
        self.metrics.track_in_flight(lambda: self.in_flight)
        self.metrics.track_max_batch_rows(lambda: self.batcher.max_rows)
        self.metrics.track_buffered_bytes(lambda: self.buffered.held)
        self.tuning: Tuning | None = None
        """What the warm-up measured, when auto_batch_size chose the cap."""
        self.ready = False
        self.draining = False
        self.warmup_note: str | None = None
        self.fatal: str | None = None
        """Why the model cannot be served after all (set by a failed warm-up on real rows)."""
        self.on_fatal: Callable[[str], None] | None = None
        """Called with ``fatal``; the server uses it to exit non-zero."""
        self._warmup: asyncio.Task[None] | None = None
        self._admission = Admission(self)
        self._arrival = Arrival(self.batcher)
        log.info("model %r: %s", model.name, self.batching_reason)

    # lifecycle

    async def start(self) -> None:
        """Start the batcher and warm up in the background (readiness follows the warm-up)."""
        await self.batcher.start()
        # Warm up in the background so liveness answers while the first inference runs.
        self._warmup = asyncio.get_running_loop().create_task(self._warm_up(), name="kubemaas-warmup")

    async def stop(self) -> None:
        """Not ready any more; stop the warm-up and the batcher."""
        self.ready = False
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        await self.batcher.stop()

    async def _warm_up(self) -> None:
        example: Feeds | None = None
        for source, feeds in self.model.warmup_feeds():
            try:
                await self.batcher.submit(feeds, batch_rows(feeds, self.model.batching.axis))
            except ServingError as exc:
                if source == EVAL_SET:  # the model cannot run its own evaluation rows: it is broken
                    self._fail(f"warm-up on the first row of {EVAL_SET} failed: {exc.message}")
                    return
                log.warning("warm-up with %s input failed (the model may need real data): %s", source, exc.message)
                continue
            example = feeds
            self.warmup_note = f"warmed up with {source} input"
            break
        if example is None:
            self.warmup_note = "every synthetic warm-up input failed; serving without a warm-up"
            log.warning("model %r: %s", self.model.name, self.warmup_note)
        elif self.settings.auto_batch_size and self.batcher.max_rows > 1:
            await self._tune(example)
        self.ready = True
        log.info("model %r loaded (%s); ready", self.model.name, self.warmup_note)

    async def _tune(self, example: Feeds) -> None:
        # Before readiness, so the measurement has the core to itself.
        axis = self.model.batching.axis
        assert axis is not None
        try:
            self.tuning = await self.batcher.in_ort_thread(
                tune, self.model.run, example, self.batcher.max_rows, self.settings.auto_batch_tolerance, axis
            )
        except Exception as exc:  # batch 1 ran: serve with the configured cap rather than not at all
            log.warning("timing batch sizes failed; keeping max_batch_size=%d: %s", self.batcher.max_rows, exc)
        else:
            self.batcher.max_rows = self.tuning.chosen
            log.info("model %r: %s", self.model.name, self.tuning.describe())

    def _fail(self, message: str) -> None:
        self.fatal = message
        log.error("model %r cannot be served: %s", self.model.name, message)
        if self.on_fatal is not None:
            self.on_fatal(message)

    def _executed(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.stats.executed(rows, seconds)

    def _unmergeable(self, message: str) -> None:
        self.batching_reason = message
        log.warning("model %r: %s", self.model.name, message)

    def is_ready(self) -> bool:
        """Loaded, warmed up and not draining."""
        return self.ready and not self.draining

    # the request path

    def model_for(self, name: str, version: str | None = None) -> Model:
        """The served model, or ``NotFound`` in Triton's words (its clients match the prefix)."""
        model = self.model
        if name != model.name:
            raise NotFound(f"Request for unknown model: '{name}' is not found; this server serves '{model.name}'")
        if version is not None and version != model.version:
            raise NotFound(
                f"Request for unknown model: '{name}' version {version} is not found; it has version {model.version}"
            )
        return model

    def admission(self) -> Admission:
        """``with plane.admission():`` around one infer request, entered before its body is
        read: 503 when not ready or the queue is already full; inside, the request counts as
        in flight. (A class, not a generator: this is on every request's path.)"""
        return self._admission

    def arrival(self) -> Arrival:
        """``with plane.arrival():`` around reading and decoding a body: the batcher may hold a
        batch open for a request that is on its way in."""
        return self._arrival

    async def infer(self, name: str, version: str | None, tensors: Feeds) -> BatchResult:
        """Run ``tensors`` (validated against the signature) through the model.

        Raises ``NotFound``, ``Unavailable``/``Overloaded`` (503), ``InvalidInput`` (400, when
        the model rejects this request's input) or ``InferenceFailed`` (500)."""
        model = self.model_for(name, version)
        if not self.ready:
            raise Unavailable(f"model {model.name!r} is not ready yet")
        rows = batch_rows(tensors, model.batching.axis)
        start = time.perf_counter()
        try:
            result = await self.batcher.submit(tensors, rows)
        except ServingError:
            self.stats.failed(time.perf_counter() - start)
            raise
        self.stats.succeeded(time.perf_counter() - start, result.queue_s, result.compute_s, rows)
        return result

    # descriptions

    def server_metadata(self) -> dict[str, Any]:
        """The v2 server metadata object."""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def batching_parameters(self) -> dict[str, Any]:
        """How requests are merged, for metadata and config."""
        params: dict[str, Any] = {
            "batch_axis": self.model.batching.axis,
            "batching": self.batching_reason,
            "max_batch_rows": self.batcher.max_rows,
        }
        if self.tuning is not None:
            params["batch_size_tuning"] = self.tuning.describe()
        if self.warmup_note is not None:
            params["warmup"] = self.warmup_note
        return params

    def model_metadata(self) -> dict[str, Any]:
        """The v2 model metadata object, plus ``parameters`` describing the batching."""
        sig = self.model.signature
        return {
            "name": self.model.name,
            "versions": [self.model.version],
            "platform": self.model.platform,
            "inputs": [t.metadata() for t in sig.inputs],
            "outputs": [t.metadata() for t in sig.outputs],
            "parameters": self.batching_parameters(),
        }

    def model_config(self) -> dict[str, Any]:
        """The model configuration in Triton's JSON form (``GET /v2/models/{name}/config``).

        With a batch axis of 0 ``max_batch_size`` is the batch cap and ``dims`` leave the batch
        axis out, as Triton does; otherwise ``max_batch_size`` is 0 and ``dims`` are whole."""
        sig = self.model.signature
        batched = self.model.batching.axis == 0 and self.batcher.max_rows > 1

        def tensor(t: Any) -> dict[str, Any]:
            dims = list(t.shape[1:] if batched else t.shape)
            return {"name": t.name, "data_type": TRITON_TYPES.get(t.datatype, f"TYPE_{t.datatype}"), "dims": dims}

        config: dict[str, Any] = {
            "name": self.model.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": [self.model.version]}},
            "max_batch_size": self.batcher.max_rows if batched else 0,
            "input": [tensor(t) for t in sig.inputs],
            "output": [tensor(t) for t in sig.outputs],
            "parameters": {k: {"string_value": str(v)} for k, v in self.batching_parameters().items()},
        }
        if batched:
            config["dynamic_batching"] = {"max_queue_delay_microseconds": int(self.settings.max_delay_ms * 1000)}
        return config

    def model_statistics(self) -> dict[str, Any]:
        """The statistics extension's answer for this model."""
        return {"model_stats": [self.stats.as_dict(self.model.name, self.model.version)]}
