"""The one ASGI middleware: request metrics, in-flight count, bearer auth, body-size pre-check.

Pure ASGI (no BaseHTTPMiddleware) so the hot path pays one function call and one ``send``
wrapper per request.
"""

from __future__ import annotations

import hmac
import logging
import time

from kubemaas_runtime.serving.asgi import ASGIApp, Message, Receive, Scope, Send, header, send_body
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.errors import (
    InferenceFailed,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    error_body,
    error_headers,
)

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
"""Probes and scrapes never need the token."""


async def send_error(send: Send, exc: ServingError) -> None:
    await send_body(send, exc.status_code, error_body(exc.message), extra=error_headers(exc)[1:])


class Gateway:
    """``render_errors``: answer exceptions from ``app`` as ``{"error": ...}`` here (the hot path,
    where FastAPI's exception handlers are skipped); otherwise let them propagate to FastAPI."""

    def __init__(
        self, app: ASGIApp, plane: DataPlane, token: str | None, max_body_bytes: int, render_errors: bool = False
    ) -> None:
        self.app = app
        self.plane = plane
        self.render_errors = render_errors
        self.expected = f"Bearer {token}".encode() if token is not None else None
        self.max_body_bytes = max_body_bytes

    def _refuse(self, scope: Scope) -> ServingError | None:
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            given = header(scope, b"authorization")
            if given is None:
                return Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
            if not hmac.compare_digest(given, self.expected):
                return Unauthorized("invalid bearer token")
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return PayloadTooLarge(f"request body of {int(length)} bytes exceeds max_body_bytes={self.max_body_bytes}")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        plane = self.plane
        start = time.perf_counter()
        status = 0  # no answer started yet
        plane.in_flight += 1

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                scope["kubemaas.route"] = "refused"
                await send_error(send_and_watch, refusal)
                return
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            if not self.render_errors or status:
                raise
            if not isinstance(exc, ServingError):
                log.exception("unhandled error on %s", scope["path"])
                exc = InferenceFailed(f"internal error: {type(exc).__name__}: {exc}")
            await send_error(send_and_watch, exc)
        finally:
            plane.in_flight -= 1
            route = scope.get("route")
            label = getattr(route, "path", None) or scope.get("kubemaas.route") or "unmatched"
            plane.metrics.observe_request(label, status or 500, time.perf_counter() - start)
