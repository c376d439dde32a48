"""``create_app(service) -> FastAPI`` for a text-generation bundle, and ``serve`` under uvicorn.

Same contract as tensor serving: bearer auth on everything but probes and metrics, a body-size
limit, request metrics by route and status, readiness after load and warm-up, 503 while draining.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemaas_runtime.generation.openai_api import openai_error, register_openai_routes
from kubemaas_runtime.generation.scheduler import QueueFull
from kubemaas_runtime.generation.service import GenerationService, RequestError
from kubemaas_runtime.generation.v2 import register_v2_generate_routes
from kubemaas_runtime.serving.protocol import bounded_protocol
from kubemaas_runtime.serving.server import CleanExitServer

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})


def error_response(path: str, status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """OpenAI's error shape on /v1, the v2 ``{"error": "..."}`` shape elsewhere."""
    if path.startswith("/v1/"):
        return openai_error(status, message, param, code, headers)
    import orjson

    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


class BodyTooLarge(Exception):
    """The body went past ``max_body_bytes`` while it was read (a chunked body announces no length)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds max_body_bytes={limit}")


class BodyTimeout(Exception):
    """The body did not arrive whole within ``body_timeout_s`` of its first read."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within body_timeout_s={timeout_s:g}")


def limit_body(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` once more than ``limit`` body bytes have arrived and
    ``BodyTimeout`` when the whole body takes longer than ``timeout_s`` (a client trickling its body
    would hold its buffer forever). After the last body chunk, receives (the disconnect watch of a
    stream) are not timed."""
    seen = 0
    deadline: float | None = None
    complete = False

    async def limited() -> Message:
        nonlocal seen, deadline, complete
        if complete:
            return await receive()
        loop = asyncio.get_running_loop()
        deadline = deadline or loop.time() + timeout_s
        try:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            raise BodyTimeout(timeout_s) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            complete = not message.get("more_body", False)
        return message

    return limited


class Gate:
    """Pure ASGI: auth, body limit, draining, in-flight count and request metrics."""

    def __init__(self, app: ASGIApp, service: GenerationService, token: str | None, max_body_bytes: int,
                 body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.service = service
        self.expected = f"Bearer {token}".encode() if token is not None else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def _refuse(self, scope: Scope) -> Response | None:
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.expected is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization")
            if given is None or not hmac.compare_digest(given, self.expected):
                return error_response(path, 401, "missing or invalid bearer token", code="invalid_api_key",
                                      headers={"www-authenticate": 'Bearer realm="kubemaas"'})
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return error_response(path, 413, f"request body of {int(length)} bytes exceeds max_body_bytes="
                                  f"{self.max_body_bytes}")
        if self.service.draining and path not in OPEN_PATHS:
            return error_response(path, 503, "the server is shutting down", headers={"retry-after": "1"})
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.service.in_flight += 1
        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, watch)
                return
            await self.app(scope, limit_body(receive, self.max_body_bytes, self.body_timeout_s), watch)
        finally:
            self.service.in_flight -= 1
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.service.metrics.observe_request(label, status or 499, time.perf_counter() - start)


def create_app(service: GenerationService) -> FastAPI:
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title=f"kubemaas: {service.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return error_response(request.url.path, exc.status, exc.message, exc.param, exc.code)

    async def queue_full(request: Request, exc: Exception) -> Response:
        return error_response(request.url.path, 503, f"overloaded: {exc}", code="overloaded",
                              headers={"retry-after": str(settings.retry_after_s)})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(request.url.path, exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.url.path, 400, str(exc.errors()))

    async def body_too_large(request: Request, exc: Exception) -> Response:
        return error_response(request.url.path, 413, str(exc))

    async def body_timeout(request: Request, exc: Exception) -> Response:
        return error_response(request.url.path, 408, str(exc), headers={"connection": "close"})

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette's ServerErrorMiddleware runs this, then re-raises so the traceback is logged
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.add_exception_handler(BodyTimeout, body_timeout)
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    register_openai_routes(app, service)
    register_v2_generate_routes(app, service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    app.add_middleware(Gate, service=service, token=settings.bearer_token(), max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s)
    return app


class DrainingServer(CleanExitServer):
    """On SIGTERM: readiness turns false and new requests get 503 while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, service: GenerationService) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.draining = True
        log.info("signal %d: draining %d in-flight requests", sig, self.service.in_flight)
        super().handle_exit(sig, frame)


def serve(service: GenerationService) -> int:
    settings = service.settings
    config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, lifespan="on",
                            access_log=False, log_level=settings.log_level,
                            timeout_graceful_shutdown=settings.drain_timeout_s, server_header=False,
                            # the request-head bounds of tensor serving (431 past max_header_bytes, 408 after
                            # header_timeout_s): plain httptools has neither
                            http=bounded_protocol(settings.max_header_bytes, settings.header_timeout_s))
    server = DrainingServer(config, service)
    server.run()
    return 0 if server.started else 1
