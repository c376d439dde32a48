"""fp32 ONNX export with a dynamic batch axis, checked against torch with ONNX Runtime."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from kubemaas_runtime.bundle import Datatype, TensorSpec
from kubemaas_runtime.training.errors import ExportError

OPSET = 17
_DATATYPES: dict[str, Datatype] = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """Export with the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
    onnxscript, which is not a dependency. Axis 0 of the input and the output is dynamic."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example.cpu(),),
                str(path),
                dynamo=False,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
            )
        except Exception as exc:
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc


def verify_onnx(
    model: nn.Module, path: Path, inputs: np.ndarray, *, rtol: float = 1e-4, atol: float = 1e-5
) -> float:
    """Run ``inputs`` through torch and ONNX Runtime at two batch sizes; return the max abs difference.

    Raises ``ExportError`` naming the difference when they disagree beyond the tolerance.
    """
    model = copy.deepcopy(model).cpu().eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    for batch in (inputs[:1], inputs[: min(len(inputs), 37)]):
        with torch.no_grad():
            expected = model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
        got = session.run(None, {name: batch})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{path}: ONNX output shape {got.shape} != torch {expected.shape} at batch {len(batch)}")
        diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(got, expected, rtol=rtol, atol=atol):
            raise ExportError(
                f"{path}: ONNX Runtime output differs from torch by up to {diff:.3g} at batch {len(batch)} "
                f"(tolerance rtol={rtol}, atol={atol})"
            )
    return worst


def signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of the exported graph, with -1 for every symbolic dimension."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def spec(arg: ort.NodeArg) -> TensorSpec:
        if arg.type not in _DATATYPES:
            raise ExportError(f"{path}: tensor {arg.name!r} has unsupported type {arg.type}")
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
        return TensorSpec(name=arg.name, datatype=_DATATYPES[arg.type], shape=shape)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]
