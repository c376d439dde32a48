"""Real models for the compression tests and bench/compression.py, built in code.

- digits: ``kubemaas train --recipe digits`` (the real training entrypoint, one process).
- sequence: ``kubemaas train --recipe sequence``, small: a token-id (INT64) input.
- encoder: a transformer encoder (nn.TransformerEncoder) briefly trained on a synthetic
  sequence-classification task, exported with a dynamic batch axis.
- tied: a one-MatMul model whose eval rows sit on a decision boundary (two classes with
  near-identical weights), so int8 weights must change some predictions: the gate that
  cannot be met.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubemaas_runtime.bundle import EVAL_SET, MODEL, Bundle, Manifest, TensorSpec, load_bundle, write_manifest

DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def _export(module: object, example: object, path: Path, dynamic_batch: bool = True) -> None:
    import torch

    assert isinstance(module, torch.nn.Module)
    assert isinstance(example, torch.Tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module, (example,), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
            opset_version=17, dynamo=False,
        )


def train_digits(dest: Path, epochs: int = 8, prune_amount: float = 0.0) -> Bundle:
    """The digits recipe's bundle, trained by the real ``kubemaas train`` in one process."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "train", "--recipe", "digits", "--output", str(dest),
         "--epochs", str(epochs), "--prune-amount", str(prune_amount)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubemaas train exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return load_bundle(dest)


SMALL_SEQUENCE = {"train_size": 256, "test_size": 64, "d_model": 16, "heads": 2, "ff": 32, "layers": 1}
"""The sequence recipe as issue 11 trains it: token ids in (INT64 ``tokens``), 4 classes out."""


def train_sequence(dest: Path, epochs: int = 1, **params: int) -> Bundle:
    """The sequence recipe's bundle (int64 token-id input), trained by the real ``kubemaas train``."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    settings = [arg for key, value in {**SMALL_SEQUENCE, **params}.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "train", "--recipe", "sequence", "--output", str(dest),
         "--epochs", str(epochs), *settings],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubemaas train exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return load_bundle(dest)


def boundary_bundle(source: Bundle, dest: Path, rows: int = 64, pool: int = 40_000) -> Bundle:
    """``source``'s model with an eval set of token rows on its own decision boundary.

    Random token sequences (vocabulary of the sequence recipe's default) are scored by the
    fp32 model; the ``rows`` with the smallest top-1 margin above 1e-5 become eval.npz, labelled
    with fp32's own prediction. fp32 is then right on every row, so a variant that changes any
    prediction has a drop > 0: the strict gate (max accuracy drop 0) is sure to be missed by
    int8 weights (logit errors ~1e-3 against margins below that), kept by the fp32 variant.
    """
    import onnxruntime as ort

    from kubemaas_runtime.training.recipes.sequence import SequenceParams

    dest.mkdir(parents=True, exist_ok=True)
    seq_len = source.manifest.inputs[0].shape[1]
    tokens = np.random.default_rng(7).integers(0, SequenceParams().vocab, size=(pool, seq_len)).astype(np.int64)
    session = ort.InferenceSession(str(source.model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {source.manifest.inputs[0].name: tokens})[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    order = [i for i in np.argsort(margin) if margin[i] > 1e-5][:rows]
    np.savez(dest / EVAL_SET, inputs=tokens[order], labels=logits[order].argmax(axis=1).astype(np.int64))
    (dest / MODEL).write_bytes(source.model_path.read_bytes())
    return write_manifest(dest, source.manifest, files=[MODEL, EVAL_SET])


def _write(dest: Path, name: str, inputs: np.ndarray, labels: np.ndarray, classes: int, accuracy: float) -> Bundle:
    np.savez(dest / EVAL_SET, inputs=inputs.astype(np.float32), labels=labels.astype(np.int64))
    manifest = Manifest(
        name=name,
        task="classification",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, *inputs.shape[1:]])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, classes])],
        labels=[str(i) for i in range(classes)],
        metrics={"accuracy": accuracy},
    )
    return write_manifest(dest, manifest, files=[MODEL, EVAL_SET])


def _sequences(rng: np.random.Generator, prototypes: np.ndarray, rows: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a class prototype added at a few random positions."""
    classes, d_model = prototypes.shape
    labels = rng.integers(0, classes, rows)
    x = rng.standard_normal((rows, seq, d_model)).astype(np.float32)
    for i, label in enumerate(labels):
        positions = rng.choice(seq, size=max(1, seq // 8), replace=False)
        x[i, positions] += prototypes[label]
    return x, labels


def encoder_bundle(
    dest: Path, layers: int = 4, d_model: int = 256, heads: int = 4, ff: int = 1024, seq: int = 64,
    classes: int = 4, train_steps: int = 30, eval_rows: int = 128, seed: int = 0,
) -> Bundle:
    """A transformer encoder ([batch, seq, d_model] -> mean-pool -> classes), briefly trained."""
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # two shared cores: more threads only fight (40 steps: 40 s vs 1 s)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((classes, d_model)).astype(np.float32)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = torch.nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = torch.nn.Linear(d_model, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x).mean(dim=1))  # type: ignore[no-any-return]

    model = Encoder()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(train_steps):
        x, y = _sequences(rng, prototypes, 16, seq)
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    model.eval()
    x_eval, y_eval = _sequences(rng, prototypes, eval_rows, seq)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean())
    _export(model, torch.from_numpy(x_eval[:2]), dest / MODEL)
    return _write(dest, "encoder", x_eval, y_eval, classes, accuracy)


def tied_bundle(dest: Path, features: int = 64, rows: int = 200, seed: int = 0) -> Bundle:
    """logits = x @ W with W[:, 1] = W[:, 0] + 1e-3 noise; labels = the fp32 argmax.

    Classes 0 and 1 differ by far less than one int8 step of W, so every int8 variant
    flips some rows while fp32 scores 1.0: an accuracy drop > 0 by construction.
    """
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, 3)).astype(np.float32)
    w[:, 1] = w[:, 0] + 1e-3 * rng.standard_normal(features).astype(np.float32)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    x = x[(x @ w)[:, :2].max(axis=1) > (x @ w)[:, 2]]  # keep rows where 0 or 1 wins
    labels = (x @ w).argmax(axis=1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "tied",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(dest / MODEL))
    return _write(dest, "tied", x, labels, 3, 1.0)


def regression_bundle(dest: Path, features: int = 32, rows: int = 256, seed: int = 0) -> Bundle:
    """A linear regressor (MatMul + Add) fitted by least squares on noisy synthetic targets."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    y = (x @ rng.standard_normal((features, 1)) + 0.1 * rng.standard_normal((rows, 1))).astype(np.float32)
    fitted, *_ = np.linalg.lstsq(np.hstack([x, np.ones((rows, 1), np.float32)]), y, rcond=None)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "regression",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(fitted[:-1].astype(np.float32), "W"), numpy_helper.from_array(fitted[-1].astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(dest / MODEL))
    np.savez(dest / EVAL_SET, inputs=x, labels=y)
    manifest = Manifest(
        name="regression", task="regression",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 1])],
    )
    return write_manifest(dest, manifest, files=[MODEL, EVAL_SET])
