"""Open Inference Protocol v2 datatypes and their numpy / ONNX Runtime counterparts."""

from __future__ import annotations

from typing import Any

import numpy as np

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
    try:
        return ORT_TO_V2[ort_type]
    except KeyError:
        raise ValueError(f"{where}: ONNX type {ort_type} has no Open Inference Protocol v2 datatype") from None


def v2_from_numpy(dtype: np.dtype[Any]) -> str:
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    if dtype.kind in "US":
        return "BYTES"
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol v2 datatype")
