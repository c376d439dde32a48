"""Open Inference Protocol v2 REST (KServe / Triton wire format).

Metadata and health are ordinary FastAPI routes. Infer is a raw ASGI endpoint: the body goes
from bytes to numpy through ``codec`` with no request object, no pydantic model and no
threadpool hop; ONNX Runtime runs in the batcher's own thread.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import Route

from kubemaas_runtime.serving.asgi import (
    JSON,
    OCTET_STREAM,
    ASGIApp,
    ClientGone,
    JSONBytes,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_body,
)
from kubemaas_runtime.serving.codec import decode_infer, encode_infer
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.errors import InvalidInput

COMPUTE_HEADER = b"kubemaas-compute-time-ms"
"""Each infer answer carries ONNX Runtime's time for the batch the request ran in."""
HEADER_LENGTH = b"inference-header-content-length"


class InferEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` as a bare ASGI app."""

    def __init__(self, plane: DataPlane, route: str) -> None:
        self.plane = plane
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["kubemaas.route"] = self.route
        plane = self.plane
        params = scope["path_params"]
        model = plane.check_model(params["name"], params.get("version"))
        raw_length = header(scope, HEADER_LENGTH)
        header_length: int | None = None
        if raw_length is not None:
            try:
                header_length = int(raw_length)
            except ValueError:
                raise InvalidInput(f"Inference-Header-Content-Length {raw_length!r} is not an integer") from None
        batcher = plane.batcher
        batcher.arriving()
        try:
            body = await read_body(receive, plane.settings.max_body_bytes)
            request = decode_infer(body, header_length, model)
        except ClientGone:
            return
        finally:
            batcher.arrived()
        result = await plane.infer(request.inputs, request.rows)
        payload, json_length = encode_infer(model, request, result.outputs)
        extra = [(COMPUTE_HEADER, f"{result.compute_s * 1000.0:.3f}".encode())]
        if json_length is None:
            await send_body(send, 200, payload, JSON, extra)
        else:
            extra.append((HEADER_LENGTH, str(json_length).encode()))
            await send_body(send, 200, payload, OCTET_STREAM, extra)


def register_v2_routes(app: FastAPI, plane: DataPlane) -> dict[str, ASGIApp]:
    """Register the v2 surface; returns the raw infer endpoints by route for the fast path."""
    hot: dict[str, ASGIApp] = {}
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        hot[path] = InferEndpoint(plane, path)
        app.router.routes.append(Route(path, hot[path], methods=["POST"]))

    router = APIRouter(default_response_class=JSONBytes)

    @router.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @router.get("/v2/health/ready")
    async def ready() -> JSONBytes:
        ok = plane.is_ready()
        return JSONBytes({"ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return plane.server_metadata()

    @router.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        return plane.check_model(name).metadata()

    @router.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        return plane.check_model(name, version).metadata()

    @router.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> JSONBytes:
        plane.check_model(name)
        ok = plane.is_ready()
        return JSONBytes({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> JSONBytes:
        plane.check_model(name, version)
        ok = plane.is_ready()
        return JSONBytes({"name": name, "ready": ok}, status_code=200 if ok else 503)

    app.include_router(router)
    return hot
