"""The data plane: one served model, its batcher, metrics and readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubemaas_runtime.serving.batching import Batcher, BatchResult, Feeds
from kubemaas_runtime.serving.errors import NotFound, Unavailable
from kubemaas_runtime.serving.metrics import Metrics
from kubemaas_runtime.serving.model import ServedModel
from kubemaas_runtime.serving.settings import ServingSettings
from kubemaas_runtime.serving.tuning import Tuning, tune

log = logging.getLogger(__name__)

SERVER_NAME = "kubemaas"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository_metadata"]


class DataPlane:
    def __init__(self, settings: ServingSettings, model: ServedModel) -> None:
        self.settings = settings
        self.model = model
        self.metrics = Metrics(model.name)
        self.batcher = Batcher(
            model.run,
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_delay_ms,
            max_queue=settings.max_queue,
            retry_after_s=settings.retry_after_s,
            batchable=model.batchable,
            on_batch=self.metrics.batch_rows.observe,
        )
        self.metrics.track_queue(lambda: self.batcher.depth)
        self.in_flight = 0
        self.metrics.track_in_flight(lambda: self.in_flight)
        self.metrics.track_max_batch_rows(lambda: self.batcher.max_rows)
        self.tuning: Tuning | None = None
        """What the warm-up measured, when auto_batch_size chose the cap."""
        self.ready = False
        self.draining = False
        self.warmup_error: str | None = None
        self._warmup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.batcher.start()
        # Warm up in the background so liveness answers while the first inference runs.
        self._warmup = asyncio.get_running_loop().create_task(self._warm_up(), name="kubemaas-warmup")

    async def _warm_up(self) -> None:
        try:
            await self.batcher.submit(self.model.example_feeds(), 1)
        except Exception as exc:  # the model loaded but cannot run: stay live, never ready
            self.warmup_error = str(exc)
            log.error("warm-up inference failed; the server stays not ready: %s", exc)
            return
        if self.settings.auto_batch_size and self.batcher.max_rows > 1:
            # Before readiness, so the measurement has the core to itself.
            try:
                self.tuning = await self.batcher.in_ort_thread(
                    tune, self.model.run, self.model.example_feeds(), self.batcher.max_rows,
                    self.settings.auto_batch_tolerance,
                )
            except Exception as exc:  # batch 1 ran: serve with the configured cap rather than not at all
                log.warning("timing batch sizes failed; keeping max_batch_size=%d: %s", self.batcher.max_rows, exc)
            else:
                self.batcher.max_rows = self.tuning.chosen
                log.info("model %r: %s", self.model.name, self.tuning.describe())
        self.ready = True
        log.info("model %r loaded and warmed up; ready", self.model.name)

    async def stop(self) -> None:
        self.ready = False
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        await self.batcher.stop()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def check_model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.model
        if name != model.name:
            raise NotFound(f"model {name!r} not found; this server serves {model.name!r}")
        if version is not None and version != model.version:
            raise NotFound(f"model {name!r} has no version {version!r}; it has {[model.version]}")
        return model

    def is_ready(self) -> bool:
        return self.ready and not self.draining

    async def infer(self, inputs: Feeds, rows: int) -> BatchResult:
        if not self.ready:
            raise Unavailable(f"model {self.model.name!r} is not ready yet")
        return await self.batcher.submit(inputs, rows)
