"""The app factory: ``create_app(settings, model) -> ServingApp``, a plain ASGI application.

Every route lives in one ``Router`` (v2, v1, metrics) behind one ``Gateway``; the app itself
only adds the ASGI lifespan (start the data plane, warm up; stop it on shutdown).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from kubemaas_runtime.serving.asgi import Receive, Scope, Send
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.middleware import Gateway
from kubemaas_runtime.serving.model import Model
from kubemaas_runtime.serving.routes import Call, Reply, Router
from kubemaas_runtime.serving.settings import ServingSettings
from kubemaas_runtime.serving.v1 import register_v1_routes
from kubemaas_runtime.serving.v2 import register_v2_routes

log = logging.getLogger(__name__)


def register_metrics_route(router: Router, plane: DataPlane) -> None:
    """``GET /metrics``: Prometheus text format."""

    async def metrics(_: Call) -> Reply:
        return Reply(plane.metrics.render(), content_type=plane.metrics.content_type.encode())

    router.add("GET", "/metrics", metrics)


class ServingApp:
    """The ASGI app; ``state.plane`` is its data plane, ``router`` its routes."""

    def __init__(self, plane: DataPlane, router: Router, token: str | None) -> None:
        self.state = SimpleNamespace(plane=plane)
        self.router = router
        self.gateway = Gateway(router, plane, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.gateway(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        plane: DataPlane = self.state.plane
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await plane.start()
                except Exception as exc:  # reported to the server, which then exits non-zero
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await plane.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: ServingSettings, model: Model) -> ServingApp:
    """The serving app for one model. Raises ``ValueError`` for an unusable token setting."""
    plane = DataPlane(settings, model)
    router = Router()
    register_v2_routes(router, plane)
    register_v1_routes(router, plane)
    register_metrics_route(router, plane)
    return ServingApp(plane, router, settings.bearer_token())
