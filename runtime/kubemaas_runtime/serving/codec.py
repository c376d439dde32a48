"""Open Inference Protocol v2 bodies <-> numpy, including the binary tensor data extension.

This is the hot path: orjson parses the body straight into dicts and lists, numpy builds each
tensor in one call, and validation is a handful of comparisons against the model's signature
(no pydantic per request).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kubemaas_runtime.serving.datatypes import V2_TO_NUMPY, coerce
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.model import Model, Tensor

JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY

REFUSED_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout")
"""Request parameters that change what a request means (Triton's sequence batcher, scheduling)
and that this server does not implement: refused with 400 rather than silently ignored."""


@dataclass
class RequestedOutput:
    """One entry of ``outputs`` (or every output when none is named) and whether it is sent binary."""
    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded v2 request: inputs in the model's order, as numpy arrays of their declared shapes."""
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]


def parse_json(raw: bytes | memoryview, what: str = "request body") -> Any:
    """Parse JSON, accepting the ``NaN``, ``Infinity`` and ``-Infinity`` tokens Triton (rapidjson)
    and Python's json module read and write. Raises ``InvalidInput`` naming ``what``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        data = bytes(raw)
        if b"NaN" in data or b"Infinity" in data:  # orjson refuses them; the stdlib reads them
            try:
                return json.loads(data)
            except ValueError:
                pass
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def _check_shape(spec: Tensor, shape: Any, where: str) -> tuple[int, ...]:
    if type(shape) is not list:
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers, got {shape!r}")
    for d in shape:
        if type(d) is not int or d < 0:
            raise InvalidInput(f"{where}.shape must be a list of non-negative integers, got {shape!r}")
    model_shape = spec.shape
    if len(shape) != len(model_shape):
        raise InvalidInput(f"{where}.shape {shape} does not match the model's {list(model_shape)} for {spec.name!r}")
    for m, d in zip(model_shape, shape, strict=True):
        if m != d and m != -1:
            raise InvalidInput(f"{where}.shape {shape} does not match the model's {list(model_shape)} for {spec.name!r}")
    return tuple(shape)


def _from_json(spec: Tensor, data: Any, shape: tuple[int, ...], where: str, budget: int) -> np.ndarray:
    expected = math.prod(shape)
    if expected > budget:  # every JSON element takes at least one byte: refuse before building
        raise InvalidInput(f"{where}.shape {list(shape)} needs {expected} elements; the body cannot hold them")
    arr = coerce(data if isinstance(data, list) else [data], spec.datatype, f"{where}.data")
    if arr.size != expected:
        raise InvalidInput(f"{where}.data has {arr.size} elements but shape {list(shape)} needs {expected}")
    return arr.reshape(shape)


def _bytes_from_binary(raw: memoryview, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset, n = 0, 0
    while offset < len(raw):
        if n >= count or offset + 4 > len(raw):
            raise InvalidInput(f"{where}: binary BYTES data does not hold {count} length-prefixed elements")
        (size,) = struct.unpack_from("<I", raw, offset)
        try:
            out[n] = bytes(raw[offset + 4 : offset + 4 + size]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: BYTES element {n} is not UTF-8 (ONNX Runtime strings are text)") from None
        offset += 4 + size
        n += 1
    if n != count or offset != len(raw):
        raise InvalidInput(f"{where}: binary BYTES data holds {n} elements, shape needs {count}")
    return out


def _from_binary(spec: Tensor, raw: memoryview, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        if count * 4 > len(raw):  # each element carries a 4-byte length: refuse before allocating
            raise InvalidInput(
                f"{where}.parameters.binary_data_size is {len(raw)} bytes, too few for the {count} BYTES "
                f"elements of shape {list(shape)} (4 bytes of length each at least)"
            )
        return _bytes_from_binary(raw, count, where).reshape(shape)
    expected = count * spec.dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{where}.parameters.binary_data_size is {len(raw)} bytes but {spec.datatype} shape {list(shape)} needs {expected}"
        )
    arr = np.frombuffer(raw, dtype=spec.dtype.newbyteorder("<")).reshape(shape)
    return arr if arr.flags.aligned else arr.copy()


def _request_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"'parameters' must be an object, got {type(params).__name__}")
    refused = [k for k in REFUSED_PARAMETERS if k in params]
    if refused:
        raise InvalidInput(
            f"request parameters {refused} are not supported by this server (no sequence batching, "
            "priorities or per-request timeouts); remove them"
        )
    return params


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise InvalidInput(f"{where}.{key} must be true or false, got {value!r}")
    return value


def decode_infer(body: bytes, header_length: int | None, model: Model) -> InferRequest:
    """Parse and validate a v2 infer request (JSON, or JSON header + binary tensors).

    Raises ``InvalidInput`` naming the field and the value for anything malformed; element
    counts are checked against the body before any tensor is allocated."""
    view = memoryview(body)
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes"
            )
        doc = parse_json(view[:header_length], "the JSON header of the request")
    else:
        doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs 'inputs': a non-empty list of tensors")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInput(f"'id' must be a string, got {req_id!r}")
    request_params = _request_parameters(doc)
    offset = header_length if header_length is not None else len(body)
    inputs: dict[str, np.ndarray] = {}
    index = model.signature.input_index
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
        name = item.get("name")
        spec = index.get(name) if isinstance(name, str) else None
        if spec is None or not isinstance(name, str):
            raise InvalidInput(f"{where}.name {name!r} is not an input of model {model.name!r}; inputs are {list(index)}")
        where = f"input {name!r}"
        if name in inputs:
            raise InvalidInput(f"{where} is given twice")
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
                raise InvalidInput(f"{where}: datatype {datatype!r} is not a v2 datatype this server supports")
            raise InvalidInput(f"{where}: datatype {datatype} does not match the model's {spec.datatype}")
        shape = _check_shape(spec, item.get("shape"), where)
        params = item.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput(f"{where}.parameters must be an object, got {type(params).__name__}")
        size = params.get("binary_data_size") if params else None
        if size is not None:
            if header_length is None:
                raise InvalidInput(f"{where} has binary_data_size but the request has no Inference-Header-Content-Length")
            if type(size) is not int or size < 0 or offset + size > len(body):
                raise InvalidInput(f"{where}.parameters.binary_data_size {size!r} runs past the end of the body")
            inputs[name] = _from_binary(spec, view[offset : offset + size], shape, where)
            offset += size
        elif "data" in item:
            inputs[name] = _from_json(spec, item["data"], shape, where, len(body))
        else:
            raise InvalidInput(f"{where} has neither data nor parameters.binary_data_size")
    if offset != len(body):
        raise InvalidInput(f"the body has {len(body) - offset} bytes of binary data no input claims")
    if len(inputs) != len(index):
        missing = [n for n in index if n not in inputs]
        raise InvalidInput(f"model {model.name!r} needs inputs {missing}, which the request lacks")
    if len(inputs) > 1:
        inputs = {n: inputs[n] for n in index}  # the model's order, so merge keys compare equal
    return InferRequest(req_id, inputs, _requested_outputs(doc, request_params, model))


def _requested_outputs(doc: dict[str, Any], params: dict[str, Any], model: Model) -> list[RequestedOutput]:
    signature = model.signature
    binary_default = _flag(params, "binary_data_output", False, "parameters")
    raw = doc.get("outputs")
    if raw is None or raw == []:
        return [RequestedOutput(n, binary_default) for n in signature.output_names]
    if not isinstance(raw, list):
        raise InvalidInput(f"'outputs' must be a list, got {type(raw).__name__}")
    wanted = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidInput(f"outputs[{i}] must be an object with a name, got {type(item).__name__}")
        name = item.get("name")
        if not isinstance(name, str) or name not in signature.output_index:
            raise InvalidInput(
                f"outputs[{i}].name {name!r} is not an output of model {model.name!r}; "
                f"outputs are {signature.output_names}"
            )
        p = item.get("parameters")
        if p is None:
            p = {}
        elif not isinstance(p, dict):
            raise InvalidInput(f"outputs[{i}].parameters must be an object, got {type(p).__name__}")
        if "classification" in p:
            raise InvalidInput(f"outputs[{i}]: the classification extension is not supported")
        wanted.append(RequestedOutput(name, _flag(p, "binary_data", binary_default, f"outputs[{i}].parameters")))
    return wanted


def _binary_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == object or arr.dtype.kind in "US":
        parts = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def nonfinite_json(flat: np.ndarray) -> orjson.Fragment:
    """A flat float array as JSON with ``NaN``, ``Infinity`` and ``-Infinity`` where orjson would
    write ``null`` (what Triton writes and Python's json module reads back)."""
    bad = ~np.isfinite(flat)
    tokens = orjson.dumps(np.where(bad, 0, flat), option=JSON_OPTS)[1:-1].split(b",")
    for i in np.flatnonzero(bad):
        v = flat[i]
        tokens[i] = b"NaN" if np.isnan(v) else (b"Infinity" if v > 0 else b"-Infinity")
    return orjson.Fragment(b"[" + b",".join(tokens) + b"]")


def _json_data(arr: np.ndarray, careful: bool = False) -> Any:
    """An output's ``data``; ``careful`` writes non-finite floats as tokens, not ``null``."""
    flat = arr.reshape(-1)
    if flat.dtype == object or flat.dtype.kind in "US":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype == np.float16:
        flat = flat.astype(np.float32)
    if careful and flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return nonfinite_json(flat)
    return flat


def encode_infer(model: Model, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        doc["id"] = request.id
    tensors = []
    blobs = []
    for want in request.outputs:
        arr = outputs[want.name]
        spec = model.signature.output_index[want.name]
        entry: dict[str, Any] = {"name": want.name, "datatype": spec.datatype, "shape": list(arr.shape)}
        if want.binary:
            blob = _binary_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr)
        tensors.append(entry)
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=JSON_OPTS)
    if b"null" in header:  # orjson writes NaN and infinities as null (rare: look only then)
        for want, entry in zip(request.outputs, tensors, strict=True):
            if "data" in entry:
                entry["data"] = _json_data(outputs[want.name], careful=True)
        header = orjson.dumps(doc, option=JSON_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
