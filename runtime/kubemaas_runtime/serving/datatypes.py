"""Open Inference Protocol v2 datatypes and their numpy / ONNX Runtime counterparts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kubemaas_runtime.serving.errors import InvalidInput

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""BF16 is left out: ONNX Runtime accepts it but numpy has no bfloat16 dtype to carry it."""

ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

INTEGER_KINDS = frozenset("iub")


def v2_from_ort(ort_type: str, where: str) -> str:
    """The v2 datatype of an ONNX Runtime type string; raises ``ValueError`` naming ``where``."""
    try:
        return ORT_TO_V2[ort_type]
    except KeyError:
        raise ValueError(f"{where}: ONNX type {ort_type} has no Open Inference Protocol v2 datatype") from None


def v2_from_numpy(dtype: np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype; raises ``ValueError`` when there is none."""
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    if dtype.kind in "US":
        return "BYTES"
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol v2 datatype")


def _first_outside(values: np.ndarray, lo: Any, hi: Any) -> Any:
    bad = values[(values < lo) | (values > hi)]
    return bad.reshape(-1)[0].item()


def check_integer_range(arr: np.ndarray, datatype: str, where: str) -> None:
    """Raise ``InvalidInput`` naming ``where``, the first value outside ``datatype``'s range
    and the range, instead of letting numpy wrap it (UINT8 -1 would become 255)."""
    dtype = V2_TO_NUMPY[datatype]
    if not arr.size:
        return
    if dtype.kind == "b":
        lo, hi = 0, 1
    else:
        info = np.iinfo(dtype)
        lo, hi = int(info.min), int(info.max)
    if arr.dtype == object:  # integers too big for int64/uint64
        big = next((v for v in arr.reshape(-1) if not lo <= int(v) <= hi), None)
        if big is not None:
            raise InvalidInput(f"{where}: value {big} is out of range for {datatype} [{lo}, {hi}]")
        return
    if arr.dtype.kind == "b":
        return
    if arr.min() < lo or arr.max() > hi:
        raise InvalidInput(
            f"{where}: value {_first_outside(arr, lo, hi)} is out of range for {datatype} [{lo}, {hi}]"
        )


def check_float_range(arr: np.ndarray, source: Any, datatype: str, where: str) -> None:
    """Raise ``InvalidInput`` when a finite value became infinite in ``arr`` (FP16 70000 is
    out of range); NaN and infinities sent as such pass. ``source`` is what ``arr`` was built from."""
    if not arr.size or math.isfinite(arr.sum()):  # one reduction, no temporary; rarely not finite
        return
    if np.isfinite(arr).all():  # the sum overflowed, no element did
        return
    wide = np.asarray(source, dtype=np.float64).reshape(arr.shape)
    overflow = np.isfinite(wide) & ~np.isfinite(arr)
    if overflow.any():
        info = np.finfo(arr.dtype)
        value = wide[overflow].reshape(-1)[0].item()
        raise InvalidInput(f"{where}: value {value} is out of range for {datatype} [{info.min}, {info.max}]")


def coerce(data: Any, datatype: str, where: str) -> np.ndarray:
    """JSON data (a flat or nested list of numbers, bools or strings) as a numpy array of
    ``datatype``, refusing values of the wrong kind or outside the datatype's range with
    ``InvalidInput`` naming ``where``. The array keeps the nesting's shape."""
    dtype = V2_TO_NUMPY[datatype]
    try:
        if datatype == "BYTES":
            arr = np.array(data, dtype=object)
            if not all(isinstance(v, str) for v in arr.reshape(-1)):
                raise InvalidInput(f"{where}: BYTES elements must be strings")
            return arr
        if dtype.kind in INTEGER_KINDS:
            arr = np.asarray(data)
            if arr.size and arr.dtype.kind not in INTEGER_KINDS:
                # numpy turns integers beyond int64 into floats or objects: keep them exact
                # (as Python ints) so the range check names them.
                exact = np.array(data, dtype=object)
                if not all(type(v) is int for v in exact.reshape(-1)):
                    raise InvalidInput(f"{where} must hold {datatype} values (integers), got {arr.dtype} values")
                arr = exact
            check_integer_range(arr, datatype, where)
            return arr.astype(dtype, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by value
            if type(data) is list and data and type(data[0]) is float:
                # Flat float data (what clients send): np.fromiter skips asarray's nesting probe.
                # Anything else in the list makes it raise, and asarray then gives the message.
                try:
                    arr = np.fromiter(data, dtype=dtype, count=len(data))
                except (ValueError, TypeError):
                    arr = np.asarray(data, dtype=dtype)
            else:
                arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"{where} cannot be read as {datatype}: {exc}") from None
    if dtype.itemsize < 8:  # a JSON number is a float64: only narrower types can overflow
        check_float_range(arr, data, datatype, where)
    return arr
