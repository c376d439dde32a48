"""The app factory: ``create_app(settings, model) -> FastAPI``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.errors import ServingError, error_body, error_headers
from kubemaas_runtime.serving.fastpath import HotRoutes, ServingApp
from kubemaas_runtime.serving.middleware import Gateway
from kubemaas_runtime.serving.model import ServedModel
from kubemaas_runtime.serving.settings import ServingSettings
from kubemaas_runtime.serving.v1 import register_v1_routes
from kubemaas_runtime.serving.v2 import register_v2_routes


def error_response(exc: ServingError) -> Response:
    """The one mapping from an error to ``{"error": "..."}`` with its status and headers."""
    headers = {k.decode(): v.decode() for k, v in error_headers(exc)}
    return Response(error_body(exc.message), status_code=exc.status_code, headers=headers)


async def _serving_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    return error_response(exc)


async def _http_error(_: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the same ``{"error": ...}`` shape."""
    assert isinstance(exc, HTTPException)
    return Response(
        error_body(str(exc.detail)), status_code=exc.status_code, media_type="application/json", headers=exc.headers
    )


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return Response(error_body(problems), status_code=400, media_type="application/json")


def register_metrics_route(app: FastAPI, plane: DataPlane) -> None:
    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(plane.metrics.render(), media_type=plane.metrics.content_type)


def create_app(settings: ServingSettings, model: ServedModel) -> FastAPI:
    plane = DataPlane(settings, model)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        try:
            yield
        finally:
            await plane.stop()

    app = ServingApp(
        title=f"kubemaas: {model.name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.plane = plane
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    hot = {**register_v2_routes(app, plane), **register_v1_routes(app, plane)}
    register_metrics_route(app, plane)
    token = settings.bearer_token()
    app.add_middleware(Gateway, plane=plane, token=token, max_body_bytes=settings.max_body_bytes)
    app.hot = Gateway(HotRoutes(hot), plane, token, settings.max_body_bytes, render_errors=True)
    return app
