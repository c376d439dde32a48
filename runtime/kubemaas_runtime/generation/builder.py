"""Run onnxruntime-genai's model builder on a Hugging Face checkpoint folder (training image only).

The builder (``onnxruntime_genai.models.builder``) needs ``transformers`` 5.x, ``onnx-ir`` and
torch; it writes the decoder ONNX with its KV cache (``past_key_values.%d.*`` in, ``present.%d.*``
out, GroupQueryAttention), ``genai_config.json`` and the tokenizer files. Same as running
``python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p fp32 -e cpu``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "fp16", "bf16", "int4"]
Provider = Literal["cpu", "cuda"]


def build_genai_folder(hf_dir: Path, out_dir: Path, *, precision: Precision = "fp32", provider: Provider = "cpu") -> None:
    """Export ``hf_dir`` (config.json, model.safetensors, tokenizer files) into ``out_dir``.

    The builder prints progress on stdout; it goes to stderr here so stdout stays the
    training progress stream. Raises whatever the builder raises (an unsupported architecture
    is an ``Exception`` from the builder naming it).
    """
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubemaas-builder-cache-") as cache, contextlib.redirect_stdout(sys.stderr):
        options = parse_extra_options(None, str(hf_dir), str(out_dir), precision, provider, cache, [])
        create_model(None, str(hf_dir), str(out_dir), precision, provider, cache, **options)
