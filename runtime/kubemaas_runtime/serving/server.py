"""Run an app under uvicorn with a graceful drain on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.settings import ServingSettings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness turns false, the socket stops accepting, requests already
    in flight finish (up to ``drain_timeout_s``), then the batcher stops and the process exits 0.
    uvicorn does the listening/connection part; this adds the readiness flip."""

    def __init__(self, config: uvicorn.Config, plane: DataPlane) -> None:
        super().__init__(config)
        self.plane = plane

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the captured signal after shutdown, so the process would die
        # "killed by SIGTERM"; a drained server exits 0 instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.plane.draining = True
        log.info("signal %d: draining %d in-flight requests", sig, self.plane.in_flight)
        super().handle_exit(sig, frame)


def serve(app: FastAPI, settings: ServingSettings) -> int:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        server_header=False,
    )
    server = DrainingServer(config, app.state.plane)
    server.run()
    return 0 if server.started else 1
