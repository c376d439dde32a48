"""``kubemaas serve`` on a text-generation bundle: the same flags and ``KUBEMAAS_*`` settings as tensor
serving, plus ``--max-waiting`` and ``--provider`` (``max_batch_size`` = sequences decoded together)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubemaas_runtime.bundle import MANIFEST, BundleError


def is_text_generation(model_dir: Path) -> bool:
    """True when ``model_dir/model.json`` declares ``task: text-generation`` (cheap; no verification)."""
    try:
        return bool(json.loads((Path(model_dir) / MANIFEST).read_text()).get("task") == "text-generation")
    except (OSError, ValueError, AttributeError):
        return False


def run(args: argparse.Namespace) -> int:
    from kubemaas_runtime.generation.app import serve
    from kubemaas_runtime.generation.service import load_service
    from kubemaas_runtime.generation.settings import GenerationSettings

    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k in GenerationSettings.model_fields and v is not None
    }
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = GenerationSettings(**overrides)
        settings.bearer_token()
        service = load_service(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        sys.stderr.write(f"kubemaas serve: invalid settings: {problems}\n")
        return 2
    except (BundleError, ValueError) as exc:
        sys.stderr.write(f"kubemaas serve: {exc}\n")
        return 1
    return serve(service)
