"""Run the app under uvicorn with a graceful drain on SIGTERM.

On SIGTERM/SIGINT readiness turns false and every answer says ``Connection: close``. For up to
``drain_linger_s``, while any connection is open, the server keeps accepting and answering, so
a pooled client that sends on a keep-alive connection gets its answer and lets the connection
go instead of having it closed under it mid-send (uvicorn alone closes idle keep-alive
connections at once, which lost requests under steady load), and connections that still
arrive while the endpoint removal spreads are served too. Then uvicorn stops listening, closes
the connections left idle, lets requests in flight finish (up to ``drain_timeout_s``), the
batcher stops and the process exits 0. (A connection still in the kernel's accept backlog when
the listener closes is reset: no server can answer it, which is why Kubernetes clients rely on
the endpoint removal, and a preStop sleep, to stop sending first.) A model that turns out not to run (its own eval rows fail at warm-up) stops the
server with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from kubemaas_runtime.serving.app import ServingApp
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.protocol import bounded_protocol
from kubemaas_runtime.serving.settings import ServingSettings

log = logging.getLogger(__name__)


class CleanExitServer(uvicorn.Server):
    """A uvicorn server that exits 0 after SIGTERM/SIGINT instead of re-raising the signal.

    uvicorn re-raises the captured signal after shutdown, so the process would die "killed by
    SIGTERM" and a pod's container would report exit code 143 after a clean drain. Subclasses
    override ``handle_exit`` to start their drain. Shared by tensor and text-generation serving.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class DrainingServer(CleanExitServer):
    """uvicorn does the listening and the connections; this adds the drain described above."""

    def __init__(self, config: uvicorn.Config, plane: DataPlane, linger_s: float) -> None:
        super().__init__(config)
        self.plane = plane
        self.linger_s = linger_s
        plane.on_fatal = self._fatal

    def _fatal(self, message: str) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.plane.draining:
            log.info("signal %d: draining (%d requests in flight)", sig, self.plane.in_flight)
        self.plane.draining = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.plane.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        # uvicorn keeps its connections in a plain set with no event to wait on: poll it.
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


def serve(app: ServingApp, settings: ServingSettings) -> int:
    """Serve until SIGTERM; 0 after a clean drain, 1 when start-up or the model failed."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        server_header=False,
        http=bounded_protocol(settings.max_header_bytes, settings.header_timeout_s),
    )
    plane: DataPlane = app.state.plane
    server = DrainingServer(config, plane, settings.drain_linger_s)
    server.run()
    return 0 if server.started and plane.fatal is None else 1
