"""``kubemaas fetch URI DIR``: the storage initializer (an init container in serving pods)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kubemaas_runtime.storage.errors import StorageError
from kubemaas_runtime.storage.settings import load_settings
from kubemaas_runtime.storage.transfer import fetch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="bundle location: path, file://, pvc://claim/path, http(s)://, s3://bucket/prefix")
    parser.add_argument("dest", type=Path, help="local directory to fill (created if missing)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()  # up front: a bad env var is one line, before any transfer
        bundle = fetch(args.uri, args.dest, settings)
    except StorageError as exc:
        sys.stderr.write(f"kubemaas fetch: {exc}\n")
        return 1
    summary = {
        "event": "fetched",
        "uri": args.uri,
        "dest": str(bundle.path),
        "name": bundle.manifest.name,
        "variant": bundle.manifest.variant,
        "sha256": bundle.digest,
        "files": len(bundle.manifest.files),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
