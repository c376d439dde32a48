"""``kubemaas bundle DIR [--name NAME]``: make a bring-your-own onnxruntime-genai folder a bundle.

Writes ``DIR/model.json`` (task text-generation, schema 3, the sha256 and size of every file) for
a folder the model builder produced, e.g.
``python -m onnxruntime_genai.models.builder -m Qwen/Qwen2.5-0.5B-Instruct -o DIR -p int4 -e cpu``
run by the user where the hub is reachable. Upload DIR anywhere a ModelService ``model.uri``
can point (s3://, pvc://, http(s)://).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from kubemaas_runtime.bundle import BundleError, Source


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="folder with genai_config.json, the ONNX decoder and tokenizer")
    parser.add_argument("--name", help="model name (default: the folder's name, lower-cased)")
    parser.add_argument("--eval-text", dest="eval_text", help="held-out text file in the folder for perplexity gates")


def default_name(directory: Path) -> str:
    """A valid manifest name from a folder name: lower case, runs of other characters become '-'."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", directory.resolve().name.lower()).strip("-_.")
    return name[:63].rstrip("-_.") or "model"


def run(args: argparse.Namespace) -> int:
    from kubemaas_runtime.generation.folder import describe_folder

    directory: Path = args.directory
    if not directory.is_dir():
        sys.stderr.write(f"kubemaas bundle: {directory}: not a directory\n")
        return 2
    try:
        bundle = describe_folder(
            directory, args.name or default_name(directory), source=Source(kind="external"), eval_text=args.eval_text
        )
    except (BundleError, ValueError) as exc:
        sys.stderr.write(f"kubemaas bundle: {exc}\n")
        return 1
    sys.stdout.write(f"{bundle.path / 'model.json'}: {len(bundle.manifest.files)} files, sha256 {bundle.digest}\n")
    return 0
