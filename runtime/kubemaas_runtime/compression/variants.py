"""The variant builders: each turns the bundle's fp32 model.onnx into one candidate file.

    fp32          ONNX Runtime graph optimisations (EXTENDED level) baked into the file
    int8-dynamic  quantize_dynamic: int8 weights, activations quantized per batch at run time
                  (so a row's output depends slightly on the batch the server forms)
    int8-static   quantize_static, QDQ format, every supported op, activation ranges
                  calibrated on rows of eval.npz; per-channel weights for Conv models
    fp16          fp16 weights and compute, fp32 inputs/outputs kept (Casts at the edges)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

log = logging.getLogger(__name__)

FP32 = "fp32"
INT8_DYNAMIC = "int8-dynamic"
INT8_STATIC = "int8-static"
FP16 = "fp16"
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beside the source model."""

    work: Path
    """Scratch directory for intermediate models."""
    input_name: str
    calibration: np.ndarray
    """Rows fed to int8-static calibration (batch first, in the input's declared dtype)."""
    reduce_range: bool
    """7-bit weights (see cpu.py)."""


Builder = Callable[[Path, Path, BuildContext], None]


def build_fp32(src: Path, dst: Path, ctx: BuildContext) -> None:
    """Save ORT's EXTENDED-level optimised graph.

    EXTENDED (constant folding, redundant-node removal, fusions such as
    SkipLayerNormalization) is kept on disk; ALL would also bake in layout
    transformations tied to this CPU's vector width, which is not portable.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def preprocess(src: Path, dst: Path) -> None:
    """ORT's quantization pre-processing: symbolic shape inference + basic optimisation.

    Symbolic shape inference cannot follow every exporter's Reshape arithmetic (torch's
    MultiheadAttention trips its assert); then ONNX shape inference alone is used.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # symbolic_shape_infer raises bare AssertionErrors
        log.info("symbolic shape inference failed (%s); using ONNX shape inference only", exc)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def _prepared(src: Path, ctx: BuildContext) -> Path:
    """The pre-processed model, built once per run and shared by both int8 builders.

    (quantize_dynamic rewrites Gemm as MatMul itself, so nn.Linear weights are covered.)
    """
    prepared = ctx.work / "preprocessed.onnx"
    if not prepared.exists():
        preprocess(src, prepared)
    return prepared


def build_int8_dynamic(src: Path, dst: Path, ctx: BuildContext) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(_prepared(src, ctx)), str(dst), weight_type=QuantType.QInt8, reduce_range=ctx.reduce_range
    )


class _Calibration:
    """A CalibrationDataReader over fixed rows, in small batches."""

    def __init__(self, input_name: str, rows: np.ndarray) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {input_name: rows[i : i + CALIBRATION_BATCH]} for i in range(0, len(rows), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def wants_per_channel(model: onnx.ModelProto) -> bool:
    """Per-channel weight scales where they help: Conv filters, whose channel ranges differ widely.

    On MatMul/Gemm weights it bought no accuracy on the digits MLP or the encoder and
    cost speed on the encoder (bench/compression.py lever table), so those stay per-tensor.
    """
    return any(node.op_type == "Conv" for node in model.graph.node)


def build_int8_static(src: Path, dst: Path, ctx: BuildContext) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    prepared = _prepared(src, ctx)
    quantize_static(
        str(prepared),
        str(dst),
        Reader(ctx.input_name, ctx.calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=wants_per_channel(onnx.load(str(prepared))),
        reduce_range=ctx.reduce_range,
        activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the fast x86 kernel
        weight_type=QuantType.QInt8,
    )


def build_fp16(src: Path, dst: Path, ctx: BuildContext) -> None:
    """fp16 initializers and compute, fp32 graph inputs/outputs (so the manifest holds).

    Uses the converter that ships inside onnxruntime (onnxruntime.transformers.float16).
    On an x86 CPU, ORT's CPU provider has fp16 kernels for few ops; its InsertCastTransformer
    wraps the rest in Casts back to fp32 (the encoder's 18 Casts become 48), so the file is
    half the size but runs at 0.93-1.0x fp32 speed here (bench/compression.py).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))


BUILDERS: dict[str, Builder] = {
    FP32: build_fp32,
    INT8_DYNAMIC: build_int8_dynamic,
    INT8_STATIC: build_int8_static,
    FP16: build_fp16,
}


def candidates(mode: str) -> list[str]:
    """Variants to build for a mode; fp32 is always built as the baseline."""
    if mode == "auto":
        return list(BUILDERS)
    if mode == "none":
        return [FP32]
    if mode not in BUILDERS:
        raise ValueError(f"mode: {mode!r} is not one of auto, none, {', '.join(BUILDERS)}")
    return [FP32] if mode == FP32 else [FP32, mode]
