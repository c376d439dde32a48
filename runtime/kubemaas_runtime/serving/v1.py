"""KServe v1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.

``{"instances": [...]}`` holds one entry per row: the row itself for a single-input model,
or an object keyed by input name. ``{"predictions": [...]}`` answers one entry per row: the
row of the only output, or an object keyed by output name.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from kubemaas_runtime.serving.asgi import unless_gone
from kubemaas_runtime.serving.batching import Feeds
from kubemaas_runtime.serving.codec import parse_json
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.datatypes import coerce
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.model import Model, Tensor
from kubemaas_runtime.serving.routes import Call, Reply, Router, json_reply
from kubemaas_runtime.serving.v2 import COMPUTE_HEADER, body_reader

PREDICT = "/v1/models/{name}:predict"


def _column(spec: Tensor, values: list[Any], where: str) -> np.ndarray:
    arr = coerce(values, spec.datatype, where)
    want = list(spec.shape[1:])
    got = list(arr.shape[1:])
    if arr.ndim != len(spec.shape) or any(w != -1 and w != g for w, g in zip(want, got, strict=True)):
        raise InvalidInput(f"{where}: each instance has shape {got}, model input {spec.name!r} needs {want}")
    if spec.shape[0] != -1 and spec.shape[0] != len(arr):
        raise InvalidInput(f"{where}: {len(arr)} instances, but model input {spec.name!r} takes exactly {spec.shape[0]}")
    return arr


def decode_instances(doc: Any, model: Model) -> Feeds:
    """``{"instances": [...]}`` as one tensor per input, instances along axis 0. Raises ``InvalidInput``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list) or not doc["instances"]:
        raise InvalidInput('request body must be {"instances": [...]} with at least one instance')
    instances: list[Any] = doc["instances"]
    inputs = model.signature.inputs
    if len(inputs) == 1 and not isinstance(instances[0], dict):
        spec = inputs[0]
        return {spec.name: _column(spec, instances, "instances")}
    feeds: Feeds = {}
    for spec in inputs:
        column = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or spec.name not in inst:
                raise InvalidInput(f"instances[{i}] must be an object with input {spec.name!r}")
            column.append(inst[spec.name])
        feeds[spec.name] = _column(spec, column, f"instances[*].{spec.name}")
    extra = {k for inst in instances for k in inst} - set(model.signature.input_index)
    if extra:
        raise InvalidInput(
            f"instances name unknown inputs {sorted(extra)}; model inputs are {list(model.signature.input_index)}"
        )
    return feeds


def _jsonable(arr: np.ndarray) -> Any:
    if arr.dtype == object:
        return arr.tolist()
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        # NaN, Infinity and -Infinity as Python's json (and Triton) write them; orjson would write null.
        return orjson.Fragment(json.dumps(arr.tolist(), separators=(",", ":")).encode())
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def encode_predictions(outputs: Feeds, model: Model) -> bytes:
    """``{"predictions": [...]}``: one entry per row of axis 0."""
    specs = model.signature.outputs
    if len(specs) == 1:
        return orjson.dumps({"predictions": _jsonable(outputs[specs[0].name])}, option=orjson.OPT_SERIALIZE_NUMPY)
    rows = next(iter(outputs.values())).shape[0]
    preds = [{name: _jsonable(value[i]) for name, value in outputs.items()} for i in range(rows)]
    return orjson.dumps({"predictions": preds}, option=orjson.OPT_SERIALIZE_NUMPY)


def register_v1_routes(router: Router, plane: DataPlane) -> None:
    """Register the v1 surface on ``router``."""

    async def predict(call: Call) -> Reply:
        name = call.params["name"]
        model = plane.model_for(name)
        with plane.admission():
            reader = body_reader(plane)
            try:
                with plane.arrival():
                    feeds = decode_instances(parse_json(await reader.read(call.scope, call.receive)), model)
                result = await unless_gone(plane.infer(name, None, feeds), call.scope)
            finally:
                reader.release()
        body = encode_predictions(result.outputs, model)
        return Reply(body, headers=[(COMPUTE_HEADER, f"{result.compute_s * 1000.0:.3f}".encode())])

    async def model_status(call: Call) -> Reply:
        name = call.params["name"]
        plane.model_for(name)
        return json_reply({"name": name, "ready": plane.is_ready()})

    async def models(_: Call) -> Reply:
        return json_reply({"models": [plane.model.name]})

    router.add("POST", PREDICT, predict)
    router.add("GET", "/v1/models/{name}", model_status)
    router.add("GET", "/v1/models", models)
