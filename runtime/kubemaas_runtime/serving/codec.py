"""Open Inference Protocol v2 bodies <-> numpy, including the binary tensor data extension.

This is the hot path: orjson parses the body straight into dicts and lists, numpy builds each
tensor in one call, and validation is a handful of comparisons against the model's signature
(no pydantic per request).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kubemaas_runtime.serving.datatypes import INTEGER_KINDS, V2_TO_NUMPY
from kubemaas_runtime.serving.errors import InvalidInput
from kubemaas_runtime.serving.model import ServedModel, Tensor

JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    rows: int
    """Size of the leading (batch) axis shared by every input."""


def parse_json(raw: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
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


def _from_json(spec: Tensor, data: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    dtype = spec.dtype
    try:
        if spec.datatype == "BYTES":
            arr = np.array(data, dtype=object)
            flat = arr.reshape(-1)
            if not all(isinstance(v, str) for v in flat):
                raise InvalidInput(f"{where}.data: BYTES elements must be strings")
        elif dtype.kind in INTEGER_KINDS:
            arr = np.asarray(data)
            if arr.dtype.kind not in INTEGER_KINDS and arr.size:
                raise InvalidInput(f"{where}.data must hold {spec.datatype} values (integers), got {arr.dtype} values")
            arr = arr.astype(dtype, copy=False)
        elif data and type(data[0]) is float and dtype.kind == "f":
            # Flat float data (what clients send): np.fromiter skips asarray's nesting probe.
            # Anything else in the list makes it raise, and asarray then gives the message.
            try:
                arr = np.fromiter(data, dtype=dtype, count=len(data))
            except (ValueError, TypeError):
                arr = np.asarray(data, dtype=dtype)
        else:
            arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where}.data cannot be read as {spec.datatype}: {exc}") from None
    expected = math.prod(shape)
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
        return _bytes_from_binary(raw, count, where).reshape(shape)
    expected = count * spec.dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{where}.parameters.binary_data_size is {len(raw)} bytes but {spec.datatype} shape {list(shape)} needs {expected}"
        )
    arr = np.frombuffer(raw, dtype=spec.dtype.newbyteorder("<")).reshape(shape)
    return arr if arr.flags.aligned else arr.copy()


def decode_infer(body: bytes, header_length: int | None, model: ServedModel) -> InferRequest:
    """Parse and validate a v2 infer request (JSON, or JSON header + binary tensors)."""
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
    offset = header_length if header_length is not None else len(body)
    inputs: dict[str, np.ndarray] = {}
    index = model.input_index
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
            if datatype not in V2_TO_NUMPY:
                raise InvalidInput(f"{where}: datatype {datatype!r} is not a v2 datatype this server supports")
            raise InvalidInput(f"{where}: datatype {datatype} does not match the model's {spec.datatype}")
        shape = _check_shape(spec, item.get("shape"), where)
        params = item.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if header_length is None:
                raise InvalidInput(f"{where} has binary_data_size but the request has no Inference-Header-Content-Length")
            if type(size) is not int or size < 0 or offset + size > len(body):
                raise InvalidInput(f"{where}.parameters.binary_data_size {size!r} runs past the end of the body")
            inputs[name] = _from_binary(spec, view[offset : offset + size], shape, where)
            offset += size
        elif "data" in item:
            inputs[name] = _from_json(spec, item["data"], shape, where)
        else:
            raise InvalidInput(f"{where} has neither data nor parameters.binary_data_size")
    if offset != len(body):
        raise InvalidInput(f"the body has {len(body) - offset} bytes of binary data no input claims")
    if len(inputs) != len(index):
        missing = [n for n in index if n not in inputs]
        raise InvalidInput(f"model {model.name!r} needs inputs {missing}, which the request lacks")
    if len(inputs) > 1:
        inputs = {n: inputs[n] for n in index}  # the model's order, so merge keys compare equal
    rows = _rows(inputs, model)
    return InferRequest(req_id, inputs, _requested_outputs(doc, model), rows)


def _rows(inputs: dict[str, np.ndarray], model: ServedModel) -> int:
    if not model.batchable:
        return 1
    if len(inputs) == 1:
        return int(next(iter(inputs.values())).shape[0])
    rows = {a.shape[0] for a in inputs.values()}
    if len(rows) != 1:
        raise InvalidInput(f"inputs disagree on the batch size (leading dimension): {sorted(rows)}")
    return int(rows.pop())


def _requested_outputs(doc: dict[str, Any], model: ServedModel) -> list[RequestedOutput]:
    params = doc.get("parameters")
    binary_default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    raw = doc.get("outputs")
    if raw is None or raw == []:
        return [RequestedOutput(n, binary_default) for n in model.output_names]
    if not isinstance(raw, list):
        raise InvalidInput(f"'outputs' must be a list, got {type(raw).__name__}")
    wanted = []
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if name not in model.output_index:
            raise InvalidInput(
                f"outputs[{i}].name {name!r} is not an output of model {model.name!r}; outputs are {model.output_names}"
            )
        p = item.get("parameters")
        if isinstance(p, dict) and "classification" in p:
            raise InvalidInput(f"outputs[{i}]: the classification extension is not supported")
        binary = bool(p.get("binary_data", binary_default)) if isinstance(p, dict) else binary_default
        wanted.append(RequestedOutput(name, binary))
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


def _json_data(arr: np.ndarray) -> Any:
    flat = arr.reshape(-1)
    if flat.dtype == np.float16:
        return flat.astype(np.float32)
    if flat.dtype == object or flat.dtype.kind in "US":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat


def encode_infer(
    model: ServedModel, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        doc["id"] = request.id
    tensors = []
    blobs = []
    for want in request.outputs:
        arr = outputs[want.name]
        spec = model.output_index[want.name]
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
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
