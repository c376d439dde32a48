"""The Open Inference Protocol generate extension, as Triton and KServe expose it for text:
``POST /v2/models/{name}/generate`` (``{"text_input", "parameters"}`` -> ``{"model_name", "text_output"}``)
and ``/generate_stream`` (server-sent events, one ``text_output`` delta per event).
Health and model-ready routes let the same probes watch both kinds of pods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response, StreamingResponse

from kubemaas_runtime.generation.openai_api import check_stops, collect, failure, sse
from kubemaas_runtime.generation.sampling import SEED_MAX, SEED_MIN
from kubemaas_runtime.generation.scheduler import Delta
from kubemaas_runtime.generation.service import GenerationService, Prepared, RequestError


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] = Field(default_factory=list)
    """One stop string or up to 4, as OpenAI's ``stop`` takes them."""
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str]) -> str | list[str]:
        check_stops(stop)
        return stop


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    text_input: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    id: str | None = None


def v2_error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def register_v2_generate_routes(app: FastAPI, service: GenerationService) -> None:
    async def prepare(name: str, request: Request) -> tuple[GenerateRequest, Prepared]:
        if name != service.name:
            raise RequestError(f"unknown model {name!r}; this server serves {service.name!r}", status=404)
        try:
            body = GenerateRequest.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise RequestError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                         for e in exc.errors())) from exc
        p = body.parameters
        params = {"temperature": float(p.temperature), "top_p": float(p.top_p), "top_k": max(p.top_k, 0),
                  "seed": p.seed, "stop": check_stops(p.stop), "ignore_eos": p.ignore_eos}
        return body, service.prepare(body.text_input, p.max_tokens, params)

    def output(body: GenerateRequest, text: str, delta: Delta) -> dict[str, Any]:
        out: dict[str, Any] = {"model_name": service.name, "model_version": service.bundle.manifest.version,
                               "text_output": text, "finish_reason": delta.finish_reason,
                               "completion_tokens": delta.completion_tokens}
        if body.id is not None:
            out["id"] = body.id
        return out

    @app.post("/v2/models/{name}/generate")
    async def generate(name: str, request: Request) -> Response:
        body, prepared = await prepare(name, request)
        text, last = await collect(service, prepared, request)
        error = failure(last)
        if error is not None:
            raise error
        return Response(orjson.dumps(output(body, text, last)), media_type="application/json")

    @app.post("/v2/models/{name}/generate_stream")
    async def generate_stream(name: str, request: Request) -> Response:
        body, prepared = await prepare(name, request)
        deltas = service.open(prepared)

        async def events() -> AsyncIterator[bytes]:
            async for delta in deltas:
                error = failure(delta)
                if error is not None:
                    yield sse({"error": error.message})
                    return
                yield sse(output(body, delta.text, delta))

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(b'{"live":true}', media_type="application/json")

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = service.ready and not service.draining
        return Response(orjson.dumps({"ready": ok}), status_code=200 if ok else 503, media_type="application/json")

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        if name != service.name:
            return v2_error(404, f"unknown model {name!r}")
        return Response(orjson.dumps({"name": name, "ready": service.ready}), media_type="application/json",
                        status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> Response:
        if name != service.name:
            return v2_error(404, f"unknown model {name!r}")
        meta = {"name": name, "versions": [service.bundle.manifest.version], "platform": "onnxruntime_genai",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}]}
        return Response(orjson.dumps(meta), media_type="application/json")
