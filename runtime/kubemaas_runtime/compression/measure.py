"""Measure variants side by side: file size, latency and accuracy on eval.npz.

Latency runs are interleaved round by round across variants (and the order rotates),
so load from other processes on a shared machine hits every variant alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kubemaas_runtime.bundle import TensorSpec
from kubemaas_runtime.serving.datatypes import V2_TO_NUMPY

Task = Literal["classification", "regression"]
EVAL_BATCH = 32
LATENCY_BATCHES = (1, 32)


class Measurement(BaseModel):
    """One variant's numbers; field aliases are the camelCase of contract 3."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    name: str
    size_bytes: int = 0
    p50_batch1_ms: float | None = None
    p95_batch1_ms: float | None = None
    p50_batch32_ms: float | None = None
    p95_batch32_ms: float | None = None
    cpu_p50_batch1_ms: float | None = None
    """Median thread CPU time at batch 1: with intra_op_threads=1 ORT runs on the calling thread,
    so this excludes time lost to other processes on a shared machine."""
    cpu_p50_batch32_ms: float | None = None
    accuracy: float | None = None
    """Top-1 on eval.npz (classification)."""
    agreement: float | None = None
    """Fraction of eval rows whose top-1 equals fp32's (classification)."""
    rmse: float | None = None
    """Root-mean-square error on eval.npz (regression)."""
    accuracy_drop: float | None = None
    """fp32 accuracy minus this one (classification) or RMSE increase (regression); >0 = worse."""
    passed: bool = False
    error: str | None = None
    """Why the variant could not be built or run (then it never passes)."""


class Quality(BaseModel):
    accuracy: float | None = None
    agreement: float | None = None
    rmse: float | None = None


NUMPY_DTYPES: dict[str, np.dtype[Any]] = {k: v for k, v in V2_TO_NUMPY.items() if k != "BYTES"}
"""Open Inference Protocol v2 datatypes (the manifest's) -> numpy; BYTES has no tensor to compress."""


def as_declared(inputs: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """``inputs`` as the model input ``spec`` declares them (token ids stay integers), C-contiguous.

    Casts numpy calls ``same_kind`` are made (float64 -> float32, int32 -> int64, uint8 pixels
    -> float32); floats into an integer input (token ids) would change what the model is
    measured on, so they raise ``ValueError`` naming ``where``, the stored dtype and the
    declared datatype, as does a non-numeric (BYTES) input.
    """
    dtype = NUMPY_DTYPES.get(spec.datatype)
    if dtype is None:
        raise ValueError(f"{where}: model input {spec.name!r} is {spec.datatype}; compression needs a numeric input")
    if inputs.dtype != dtype and not np.can_cast(inputs.dtype, dtype, casting="same_kind"):
        raise ValueError(
            f"{where}: inputs are {inputs.dtype} but model input {spec.name!r} is declared {spec.datatype}; "
            f"store them as {dtype}"
        )
    return np.ascontiguousarray(inputs, dtype=dtype)


def open_session(path: Path, intra_op_threads: int = 1, inter_op_threads: int = 1) -> ort.InferenceSession:
    """A CPU session configured like the serving runtime's (contract 1 thread settings)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def single_input(session: ort.InferenceSession) -> str:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"model inputs: {names}; compression needs exactly one (eval.npz has one 'inputs' array)")
    return str(inputs[0].name)


def predict(session: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """The first output over all rows, in chunks of EVAL_BATCH."""
    name = single_input(session)
    chunks = [session.run(None, {name: inputs[i : i + EVAL_BATCH]})[0] for i in range(0, len(inputs), EVAL_BATCH)]
    return np.asarray(np.concatenate(chunks), dtype=np.float64)


def top1(outputs: np.ndarray) -> np.ndarray:
    if outputs.ndim < 2 or outputs.shape[-1] < 2:
        raise ValueError(f"classification output has shape {list(outputs.shape)}; need [batch, classes>=2]")
    return np.asarray(outputs.reshape(len(outputs), -1).argmax(axis=-1))


def quality(task: Task, outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> Quality:
    """Accuracy and agreement with fp32 (classification) or RMSE (regression)."""
    if task == "classification":
        predicted = top1(outputs)
        return Quality(
            accuracy=float(np.mean(predicted == labels.reshape(-1))),
            agreement=float(np.mean(predicted == top1(reference))),
        )
    error = outputs.reshape(labels.shape) - labels
    return Quality(rmse=float(np.sqrt(np.mean(np.square(error)))))


def drop(task: Task, baseline: Quality, variant: Quality) -> float:
    """fp32 accuracy minus the variant's, or the variant's RMSE minus fp32's (>0 = worse)."""
    if task == "classification" and baseline.accuracy is not None and variant.accuracy is not None:
        return baseline.accuracy - variant.accuracy
    if task == "regression" and baseline.rmse is not None and variant.rmse is not None:
        return variant.rmse - baseline.rmse
    raise ValueError(f"task {task!r}: quality {variant} lacks the number its drop needs")


def batch_of(inputs: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows taken cyclically from the eval inputs."""
    return np.ascontiguousarray(inputs[np.arange(size) % len(inputs)])


class Timing(BaseModel):
    p50_ms: float
    p95_ms: float
    cpu_p50_ms: float


def latencies(
    sessions: Mapping[str, ort.InferenceSession], batch: np.ndarray, runs: int, warmup: int
) -> dict[str, Timing]:
    """Wall p50/p95 and thread-CPU p50 per variant, runs interleaved round by round."""
    names = list(sessions)
    feeds = {n: {single_input(s): batch} for n, s in sessions.items()}
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feeds[name])
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.thread_time()
            sessions[name].run(None, feeds[name])
            cpu[name].append((time.thread_time() - start_cpu) * 1000.0)
            wall[name].append((time.perf_counter() - start) * 1000.0)
    return {
        n: Timing(
            p50_ms=float(np.percentile(wall[n], 50)),
            p95_ms=float(np.percentile(wall[n], 95)),
            cpu_p50_ms=float(np.percentile(cpu[n], 50)),
        )
        for n in names
    }
