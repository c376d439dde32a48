"""KServe v1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.

``{"instances": [...]}`` holds one entry per row: the row itself for a single-input model,
or an object keyed by input name. ``{"predictions": [...]}`` answers one entry per row: the
row of the only output, or an object keyed by output name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI
from starlette.routing import Route

from kubemaas_runtime.serving.asgi import (
    JSON,
    ASGIApp,
    ClientGone,
    JSONBytes,
    Receive,
    Scope,
    Send,
    read_body,
    send_body,
)
from kubemaas_runtime.serving.batching import Feeds
from kubemaas_runtime.serving.codec import parse_json
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.datatypes import INTEGER_KINDS
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.model import ServedModel, Tensor
from kubemaas_runtime.serving.v2 import COMPUTE_HEADER


def _column(spec: Tensor, values: list[Any], where: str) -> np.ndarray:
    try:
        if spec.datatype == "BYTES":
            arr = np.array(values, dtype=object)
        elif spec.dtype.kind in INTEGER_KINDS:
            arr = np.asarray(values)
            if arr.dtype.kind not in INTEGER_KINDS:
                raise InvalidInput(f"{where} must hold {spec.datatype} values (integers), got {arr.dtype} values")
            arr = arr.astype(spec.dtype)
        else:
            arr = np.asarray(values, dtype=spec.dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where} cannot be read as {spec.datatype} rows: {exc}") from None
    want = list(spec.shape[1:])
    got = list(arr.shape[1:])
    if arr.ndim != len(spec.shape) or any(w != -1 and w != g for w, g in zip(want, got, strict=True)):
        raise InvalidInput(f"{where}: each instance has shape {got}, model input {spec.name!r} needs {want}")
    return arr


def decode_instances(doc: Any, model: ServedModel) -> tuple[Feeds, int]:
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list) or not doc["instances"]:
        raise InvalidInput('request body must be {"instances": [...]} with at least one instance')
    instances: list[Any] = doc["instances"]
    if len(model.inputs) == 1 and not isinstance(instances[0], dict):
        spec = model.inputs[0]
        return {spec.name: _column(spec, instances, "instances")}, len(instances)
    feeds: Feeds = {}
    for spec in model.inputs:
        column = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or spec.name not in inst:
                raise InvalidInput(f"instances[{i}] must be an object with input {spec.name!r}")
            column.append(inst[spec.name])
        feeds[spec.name] = _column(spec, column, f"instances[*].{spec.name}")
    extra = {k for inst in instances for k in inst} - set(model.input_index)
    if extra:
        raise InvalidInput(f"instances name unknown inputs {sorted(extra)}; model inputs are {list(model.input_index)}")
    return feeds, len(instances)


def _jsonable(arr: np.ndarray) -> Any:
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype == object:
        return arr.tolist()
    return np.ascontiguousarray(arr)


def encode_predictions(outputs: Feeds, model: ServedModel) -> bytes:
    if len(model.outputs) == 1:
        return orjson.dumps({"predictions": _jsonable(outputs[model.outputs[0].name])}, option=orjson.OPT_SERIALIZE_NUMPY)
    rows = next(iter(outputs.values())).shape[0]
    preds = [{name: _jsonable(value[i]) for name, value in outputs.items()} for i in range(rows)]
    return orjson.dumps({"predictions": preds}, option=orjson.OPT_SERIALIZE_NUMPY)


class PredictEndpoint:
    """``POST /v1/models/{name}:predict`` as a bare ASGI app."""

    route = "/v1/models/{name}:predict"

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["kubemaas.route"] = self.route
        plane = self.plane
        model = plane.check_model(scope["path_params"]["name"])
        plane.batcher.arriving()
        try:
            doc = parse_json(await read_body(receive, plane.settings.max_body_bytes))
            feeds, rows = decode_instances(doc, model)
        except ClientGone:
            return
        finally:
            plane.batcher.arrived()
        if not model.batchable and rows != 1:
            raise InvalidInput(f"model {model.name!r} has no dynamic batch axis; send exactly one instance")
        result = await plane.infer(feeds, rows)
        body = encode_predictions(result.outputs, model)
        await send_body(send, 200, body, JSON, [(COMPUTE_HEADER, f"{result.compute_s * 1000.0:.3f}".encode())])


def register_v1_routes(app: FastAPI, plane: DataPlane) -> dict[str, ASGIApp]:
    """Register the v1 surface; returns the raw predict endpoint by route for the fast path."""
    predict = PredictEndpoint(plane)
    app.router.routes.append(Route(PredictEndpoint.route, predict, methods=["POST"]))
    router = APIRouter(default_response_class=JSONBytes)

    @router.get("/v1/models/{name}")
    async def model_status(name: str) -> JSONBytes:
        plane.check_model(name)
        return JSONBytes({"name": name, "ready": plane.is_ready()})

    app.include_router(router)
    return {PredictEndpoint.route: predict}
