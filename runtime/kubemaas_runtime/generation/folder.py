"""Describe an onnxruntime-genai model folder as a Kubemaas bundle (manifest schema 3).

``describe_folder`` reads ``genai_config.json`` (the layout onnxruntime-genai's model builder
writes: the decoder ONNX with past/present key-value tensors, its external data, tokenizer files)
and writes ``model.json`` with the checksum and size of every file. It is what ``kubemaas bundle
DIR`` runs on a bring-your-own folder and what the ``textgen`` recipe runs on its own output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemaas_runtime.bundle import (
    GENAI_CONFIG,
    MANIFEST,
    SCHEMA_VERSION,
    Bundle,
    BundleError,
    GenerationSpec,
    Manifest,
    Source,
    check_external_data,
    check_relative,
    write_manifest,
)

TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE = "chat_template.jinja"


@dataclass(frozen=True)
class DecoderShape:
    """What the server needs from ``genai_config.json`` (``model.decoder``) to drive the ONNX decoder."""

    filename: str
    layers: int
    kv_heads: int
    head_size: int
    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    input_ids: str
    attention_mask: str
    past_key: str
    """printf pattern with one %d (the layer), e.g. ``past_key_values.%d.key``."""
    past_value: str
    logits: str
    present_key: str
    present_value: str
    position_ids: str | None
    provider_options: tuple[dict[str, Any], ...]


def _get(raw: Any, path: str, where: Path) -> Any:
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(f"{where}: missing {path!r}")
        node = node[part]
    return node


def read_genai_config(directory: Path) -> DecoderShape:
    """Parse ``genai_config.json``; raises ``BundleError`` naming the file and the missing key."""
    path = Path(directory) / GENAI_CONFIG
    if not path.is_file():
        raise BundleError(f"{path}: missing; a text-generation folder needs onnxruntime-genai's {GENAI_CONFIG}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc
    decoder = _get(raw, "model.decoder", path)
    eos = _get(raw, "model.eos_token_id", path)
    eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    inputs, outputs = _get(decoder, "inputs", path), _get(decoder, "outputs", path)
    try:
        filename = str(check_relative(str(decoder["filename"])))
        shape = DecoderShape(
            filename=filename,
            layers=int(decoder["num_hidden_layers"]),
            kv_heads=int(decoder["num_key_value_heads"]),
            head_size=int(decoder["head_size"]),
            context_length=int(_get(raw, "model.context_length", path)),
            vocab_size=int(_get(raw, "model.vocab_size", path)),
            eos_token_ids=eos_ids,
            input_ids=str(inputs["input_ids"]),
            attention_mask=str(inputs["attention_mask"]),
            past_key=str(inputs["past_key_names"]),
            past_value=str(inputs["past_value_names"]),
            logits=str(outputs["logits"]),
            present_key=str(outputs["present_key_names"]),
            present_value=str(outputs["present_value_names"]),
            position_ids=inputs.get("position_ids"),
            provider_options=tuple(decoder.get("session_options", {}).get("provider_options", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: model.decoder is incomplete: {type(exc).__name__}: {exc}") from exc
    return shape


def has_chat_template(directory: Path) -> bool:
    """True when the tokenizer files carry a chat template (its own file or tokenizer_config.json)."""
    directory = Path(directory)
    if (directory / CHAT_TEMPLATE).is_file():
        return True
    config = directory / TOKENIZER_CONFIG
    if config.is_file():
        try:
            return bool(json.loads(config.read_text()).get("chat_template"))
        except (OSError, ValueError):
            return False
    return False


def describe_folder(
    directory: Path,
    name: str,
    *,
    source: Source | None = None,
    metrics: dict[str, float] | None = None,
    eval_text: str | None = None,
    variant: str = "fp32",
) -> Bundle:
    """Write ``model.json`` (task text-generation, checksums and sizes of every file) for a genai folder.

    Raises ``BundleError`` when the folder lacks genai_config.json, the decoder file it names,
    the external data (weights) file the decoder references, or ``tokenizer.json``.
    """
    directory = Path(directory)
    shape = read_genai_config(directory)
    for rel in (shape.filename, TOKENIZER, *([eval_text] if eval_text else [])):
        if not (directory / rel).is_file():
            raise BundleError(f"{directory / rel}: missing; {GENAI_CONFIG} or the bundle needs it")
    files = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST and "variants" not in p.relative_to(directory).parts
    )
    for rel in check_external_data(directory, shape.filename, None):  # the weights file the decoder names
        if rel not in files:
            raise BundleError(f"{directory / shape.filename}: references external data {rel!r}, which is not in "
                              f"{directory}; copy it beside the model (the model builder writes it there)")
    manifest = Manifest(
        schemaVersion=SCHEMA_VERSION,  # (a Manifest built without it reads as a schema-1 file)
        name=name,
        task="text-generation",
        generation=GenerationSpec.model_validate(
            {
                "model": shape.filename,
                "contextLength": shape.context_length,
                "vocabSize": shape.vocab_size,
                "eosTokenIds": list(shape.eos_token_ids),
                "chatTemplate": has_chat_template(directory),
                "evalText": eval_text,
            }
        ),
        metrics=metrics or {},
        source=source or Source(kind="local"),
        variant=variant,
    )
    return write_manifest(directory, manifest, files=files)
