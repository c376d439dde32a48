"""Open Inference Protocol v2 REST (KServe / Triton wire format), with Triton's binary tensor
data, statistics and model configuration extensions.

Infer goes from bytes to numpy through ``codec`` with no request object, no pydantic model and
no threadpool hop; ONNX Runtime runs in the batcher's own thread.
"""

from __future__ import annotations

import time

from kubemaas_runtime.serving.asgi import OCTET_STREAM, BodyReader, header, unless_gone
from kubemaas_runtime.serving.codec import decode_infer, encode_infer
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.routes import Call, Reply, Router, json_reply

COMPUTE_HEADER = b"kubemaas-compute-time-ms"
"""Each infer answer carries ONNX Runtime's time for the call the request ran in."""
HEADER_LENGTH = b"inference-header-content-length"
MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"


def header_length(call: Call) -> int | None:
    """The binary extension's ``Inference-Header-Content-Length``; raises ``InvalidInput``."""
    raw = header(call.scope, HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length {raw!r} is not an integer") from None


def body_reader(plane: DataPlane) -> BodyReader:
    """A reader bound by the plane's body limit, buffered-bytes budget and body timeout."""
    settings = plane.settings
    return BodyReader(plane.buffered, settings.max_body_bytes, settings.body_timeout_s)


def register_v2_routes(router: Router, plane: DataPlane) -> None:
    """Register the v2 surface on ``router``."""

    async def infer(call: Call) -> Reply:
        name, version = call.params["name"], call.params.get("version")
        model = plane.model_for(name, version)
        json_length = header_length(call)
        with plane.admission():
            reader = body_reader(plane)
            try:
                with plane.arrival():
                    body = await reader.read(call.scope, call.receive)
                    started = time.perf_counter()
                    request = decode_infer(body, json_length, model)
                decoded = time.perf_counter()
                result = await unless_gone(plane.infer(name, version, request.inputs), call.scope)
                inferred = time.perf_counter()
                payload, out_length = encode_infer(model, request, result.outputs)
                plane.stats.codec(decoded - started, time.perf_counter() - inferred)
            finally:
                reader.release()
        extra = [(COMPUTE_HEADER, f"{result.compute_s * 1000.0:.3f}".encode())]
        if out_length is None:
            return Reply(payload, headers=extra)
        extra.append((HEADER_LENGTH, str(out_length).encode()))
        return Reply(payload, content_type=OCTET_STREAM, headers=extra)

    async def live(_: Call) -> Reply:
        return json_reply({"live": True})

    async def ready(_: Call) -> Reply:
        ok = plane.is_ready()
        return json_reply({"ready": ok}, 200 if ok else 503)

    async def server_metadata(_: Call) -> Reply:
        return json_reply(plane.server_metadata())

    async def model_metadata(call: Call) -> Reply:
        plane.model_for(call.params["name"], call.params.get("version"))
        return json_reply(plane.model_metadata())

    async def model_ready(call: Call) -> Reply:
        name = call.params["name"]
        plane.model_for(name, call.params.get("version"))
        ok = plane.is_ready()
        return json_reply({"name": name, "ready": ok}, 200 if ok else 503)

    async def model_config(call: Call) -> Reply:
        plane.model_for(call.params["name"], call.params.get("version"))
        return json_reply(plane.model_config())

    async def model_stats(call: Call) -> Reply:
        if "name" in call.params:
            plane.model_for(call.params["name"], call.params.get("version"))
        return json_reply(plane.model_statistics())

    router.add("GET", "/v2/health/live", live)
    router.add("GET", "/v2/health/ready", ready)
    router.add("GET", "/v2", server_metadata)
    router.add("GET", "/v2/models/stats", model_stats)
    for base in (MODEL, VERSION):
        router.add("POST", f"{base}/infer", infer)
        router.add("GET", base, model_metadata)
        router.add("GET", f"{base}/ready", model_ready)
        router.add("GET", f"{base}/config", model_config)
        router.add("GET", f"{base}/stats", model_stats)
