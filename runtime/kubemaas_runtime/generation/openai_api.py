"""OpenAI-compatible routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``.

Wire format as the official ``openai`` client speaks it (and as vLLM and KServe's Hugging Face
runtime serve it): server-sent events ending in ``data: [DONE]``, ``usage`` (on streams when
``stream_options.include_usage``), ``finish_reason`` ``stop``/``length``, and errors as
``{"error": {"message", "type", "param", "code"}}`` with their HTTP status.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, cast

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response, StreamingResponse

from kubemaas_runtime.generation.sampling import SEED_MAX, SEED_MIN
from kubemaas_runtime.generation.scheduler import Delta, QueueFull
from kubemaas_runtime.generation.service import GenerationService, Prepared, RequestError

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


def _set(value: Any) -> bool:
    """A field the client set to something other than its off value (null, false, 0, "", {}, [])."""
    return value not in (None, False, 0, "", {}, [])


UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "frequency_penalty": _set,
    "presence_penalty": _set,
    "logit_bias": _set,
    "logprobs": lambda v: v is not None and v is not False,
    "top_logprobs": lambda v: v is not None,
    "echo": _set,
    "suffix": _set,
    "best_of": lambda v: v not in (None, 1),
    "tools": _set,
    "functions": _set,
    "tool_choice": lambda v: v not in (None, "none", "auto"),
    "response_format": lambda v: v is not None and not (isinstance(v, dict) and v.get("type") == "text"),
    "modalities": lambda v: v not in (None, ["text"]),
    "audio": lambda v: v is not None,
    "prediction": lambda v: v is not None,
}
"""OpenAI fields that change what the answer means and that this server does not implement:
a request that sets one is refused (400 naming it) rather than answered as if it had not been
set. Fields that change nothing about the answer (``user``, ``metadata``, ``store``...) are
ignored, as vLLM does. ``logprobs=0`` on /v1/completions still asks for the sampled token's
log probability, so only null is "off" there."""


def check_supported(raw: dict[str, Any]) -> None:
    """``RequestError`` (400, ``param`` = the field) for the first field of ``UNSUPPORTED`` that is set."""
    for name, is_set in UNSUPPORTED.items():
        if name in raw and is_set(raw[name]):
            raise RequestError(
                f"{name}={orjson.dumps(raw[name]).decode()[:100]} is not supported by this server; "
                "leave it out (or at its default)", name, code="unsupported_parameter")


def check_stops(stop: str | list[str] | None) -> tuple[str, ...]:
    """The stop strings as a tuple; ``ValueError`` unless there are at most 4, none of them empty
    (an empty one would match at once and end every generation before its first character)."""
    stops = [stop] if isinstance(stop, str) else stop or []
    if len(stops) > 4 or any(not s for s in stops):
        raise ValueError("stop takes up to 4 non-empty strings")
    return tuple(stops)


class SamplingFields(BaseModel):
    """Fields common to both endpoints; unknown OpenAI fields are ignored as vLLM does, unless they
    ask for something not implemented (``UNSUPPORTED``)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)
    """Not in OpenAI's schema (vLLM's extension, sent via ``extra_body``); 0 or -1 is off."""
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    """vLLM's extension (``extra_body``): generate exactly max_tokens."""

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        check_stops(stop)
        return stop

    def sampling(self) -> dict[str, object]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return {"temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": max(self.top_k, 0), "seed": self.seed, "stop": tuple(stops),
                "ignore_eos": self.ignore_eos}


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    """Text or token ids, alone or in a one-element list (OpenAI's four forms; one prompt per request)."""

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            return prompt  # one prompt as token ids
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("only one prompt per request is supported (n=1)")
        return prompt

    def text(self) -> str | list[int]:
        """The prompt: text, or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        first = prompt[0]  # the validator left exactly one prompt
        return cast(list[int], prompt) if isinstance(first, int) else first


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart]

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


def _validation_problem(exc: ValidationError) -> RequestError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "str", "list")))
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"[:300] for e in exc.errors()
    )
    return RequestError(problems, param or None)


async def parse(request: Request, model: type[SamplingFields]) -> Any:
    try:
        raw = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise RequestError(f"the body must be a JSON object, got {type(raw).__name__}")
    check_supported(raw)
    try:
        body = model.model_validate(raw)
    except ValidationError as exc:
        raise _validation_problem(exc) from exc
    if body.stream_options is not None and not body.stream:  # as OpenAI and vLLM answer it
        raise RequestError("stream_options is only allowed when stream is true", "stream_options")
    return body


def check_model(service: GenerationService, name: str) -> None:
    if name != service.name:
        raise RequestError(f"The model `{name}` does not exist; this server serves `{service.name}`.",
                           "model", status=404, code="model_not_found")


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def collect(service: GenerationService, prepared: Prepared, request: Request) -> tuple[str, Delta]:
    """The whole generation; cancels it when the client disconnects before it ends."""

    async def run() -> tuple[str, Delta]:
        parts: list[str] = []
        last = Delta("", 0)
        async for delta in deltas:
            parts.append(delta.text)
            last = delta
        return "".join(parts), last

    deltas = service.open(prepared)
    task = asyncio.ensure_future(run())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.05)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise asyncio.CancelledError


def usage(prepared: Prepared, completion_tokens: int) -> dict[str, int]:
    prompt = len(prepared.prompt)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def failure(delta: Delta) -> RequestError | None:
    if delta.error is None:
        return None
    return RequestError(delta.error, status=503 if delta.finish_reason == "abort" else 500)


ChunkMaker = Callable[[Delta | None, bool], dict[str, Any]]


async def event_stream(
    service: GenerationService, prepared: Prepared, make: ChunkMaker, first: dict[str, Any] | None, include_usage: bool,
    stream: AsyncIterator[Delta],
) -> AsyncIterator[bytes]:
    # with include_usage, every chunk but the last carries "usage": null (OpenAI's stream_options)
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    if first is not None:
        yield sse({**first, **extra})
    last: Delta | None = None
    async for delta in stream:
        last = delta
        error = failure(delta)
        if error is not None:
            yield sse({"error": {"message": error.message, "type": "server_error", "param": None, "code": None}})
            break
        if delta.text or delta.finish_reason:
            yield sse({**make(delta, False), **extra})
    if include_usage and last is not None:
        chunk = make(None, True)
        chunk["usage"] = usage(prepared, last.completion_tokens)
        yield sse(chunk)
    yield b"data: [DONE]\n\n"


def register_openai_routes(app: FastAPI, service: GenerationService) -> None:
    def card() -> dict[str, Any]:
        return {"id": service.name, "object": "model", "created": service.created, "owned_by": "kubemaas",
                "max_model_len": service.context_length}

    @app.get("/v1/models")
    async def models() -> Response:
        return Response(orjson.dumps({"object": "list", "data": [card()]}), media_type="application/json")

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> Response:
        check_model(service, model)
        return Response(orjson.dumps(card()), media_type="application/json")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body: CompletionRequest = await parse(request, CompletionRequest)
        check_model(service, body.model)
        prepared = service.prepare(body.text(), body.max_tokens, body.sampling())
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: Delta | None, final: bool) -> dict[str, Any]:
            choices = [] if delta is None else [
                {"index": 0, "text": delta.text, "logprobs": None, "finish_reason": delta.finish_reason}]
            return {"id": rid, "object": "text_completion", "created": created, "model": service.name,
                    "choices": choices}

        if body.stream:
            deltas = service.open(prepared)
            include = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(event_stream(service, prepared, chunk, None, include, deltas),
                                     media_type="text/event-stream")
        text, last = await collect(service, prepared, request)
        error = failure(last)
        if error is not None:
            raise error
        result = chunk(Delta(text, last.completion_tokens, last.finish_reason), True)
        result["usage"] = usage(prepared, last.completion_tokens)
        return Response(orjson.dumps(result), media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body: ChatRequest = await parse(request, ChatRequest)
        check_model(service, body.model)
        try:
            prompt = service.tokenizer.render_chat([m.plain() for m in body.messages])
        except ValueError as exc:
            raise RequestError(str(exc), "messages") from exc
        except Exception as exc:  # a template error (jinja2) is the request's fault, e.g. unsupported roles
            raise RequestError(f"the chat template cannot render these messages: {exc}", "messages") from exc
        prepared = service.prepare(prompt, body.max_completion_tokens or body.max_tokens, body.sampling())
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: Delta | None, final: bool) -> dict[str, Any]:
            choices = [] if delta is None else [
                {"index": 0, "delta": {"content": delta.text} if delta.text else {}, "logprobs": None,
                 "finish_reason": delta.finish_reason}]
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": service.name,
                    "choices": choices}

        if body.stream:
            deltas = service.open(prepared)
            include = body.stream_options is not None and body.stream_options.include_usage
            first = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": service.name,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]}
            return StreamingResponse(event_stream(service, prepared, chunk, first, include, deltas),
                                     media_type="text/event-stream")
        text, last = await collect(service, prepared, request)
        error = failure(last)
        if error is not None:
            raise error
        result = {"id": rid, "object": "chat.completion", "created": created, "model": service.name,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                               "finish_reason": last.finish_reason}],
                  "usage": usage(prepared, last.completion_tokens)}
        return Response(orjson.dumps(result), media_type="application/json")


__all__ = ["QueueFull", "openai_error", "register_openai_routes"]
