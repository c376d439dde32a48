"""``kubemaas serve --model-dir DIR [--name NAME] [--host H] [--port P] [batching, thread and auth flags]``.

Flags override the ``KUBEMAAS_*`` environment (``ServingSettings``); nothing happens at import.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubemaas_runtime.bundle import BundleError
from kubemaas_runtime.training.progress import TERMINATION_LIMIT

TERMINATION_LOG = "/dev/termination-log"


def report_failure(message: str, termination_log: Path | str = TERMINATION_LOG) -> None:
    """Write ``kubemaas serve: <message>`` to stderr and, where its directory is writable, to
    the pod's termination message (the operator shows it as the ModelService's reason)."""
    text = f"kubemaas serve: {message}"
    sys.stderr.write(text + "\n")
    path = Path(termination_log)
    if path.parent.is_dir() and os.access(path.parent, os.W_OK):
        with contextlib.suppress(OSError):
            path.write_text(text[: TERMINATION_LIMIT - 1])


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags; each overrides its ``KUBEMAAS_*`` setting when given."""
    parser.add_argument("--model-dir", dest="model_dir", help="bundle directory or one holding model.onnx")
    parser.add_argument("--name", dest="model_name", help="served model name (default: manifest name, else directory name)")
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--batch-axis", type=int, dest="batch_axis",
                        help="axis along which requests may be merged, for a model whose model.json declares no "
                             "batchAxis (default: never merge such a model)")
    parser.add_argument("--max-batch-size", type=int, dest="max_batch_size",
                        help="most rows per merged call; 1 disables merging (never enables it)")
    parser.add_argument(
        "--auto-batch-size", action=argparse.BooleanOptionalAction, dest="auto_batch_size", default=None,
        help="time ONNX Runtime at warm-up and cap batches at the best size (default on)",
    )
    parser.add_argument("--max-delay-ms", type=float, dest="max_delay_ms", help="longest wait for a batch to fill")
    parser.add_argument("--max-queue", type=int, dest="max_queue", help="requests waiting before 503")
    parser.add_argument("--intra-op-threads", type=int, dest="intra_op_threads",
                        help="ONNX Runtime threads within an operator (default 1)")
    parser.add_argument("--inter-op-threads", type=int, dest="inter_op_threads",
                        help="ONNX Runtime threads across operators (default 1)")
    parser.add_argument("--auth-token-file", dest="auth_token_file",
                        help="file holding the bearer token requests must carry (health and metrics stay open)")
    parser.add_argument("--max-body-bytes", type=int, dest="max_body_bytes", help="request body size limit")


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until SIGTERM: 0 after a clean drain, 1 when the model cannot be
    served, 2 for invalid settings. Text-generation bundles go to the generation server."""
    from kubemaas_runtime.generation.serve_cli import is_text_generation
    from kubemaas_runtime.generation.serve_cli import run as run_text_generation

    if is_text_generation(Path(args.model_dir or os.environ.get("KUBEMAAS_MODEL_DIR", "/mnt/models"))):
        return run_text_generation(args)  # OpenAI-compatible server with continuous batching
    from kubemaas_runtime.serving.app import create_app
    from kubemaas_runtime.serving.model import load_model
    from kubemaas_runtime.serving.server import serve
    from kubemaas_runtime.serving.settings import ServingSettings

    overrides: dict[str, Any] = {
        k: v
        for k, v in vars(args).items()
        if k in ServingSettings.model_fields and v is not None
    }
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServingSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors())
        report_failure(f"invalid settings: {problems}")
        return 2
    try:
        settings.bearer_token()  # fail now on an unreadable or empty token file
        model = load_model(
            settings.model_dir,
            settings.model_name,
            batch_axis=settings.batch_axis,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
    except (BundleError, ValueError) as exc:
        report_failure(str(exc), settings.termination_log)
        return 1
    app = create_app(settings, model)
    code = serve(app, settings)
    if code != 0:
        plane = app.state.plane
        report_failure(plane.fatal or "the server did not start (see the log above)", settings.termination_log)
    return code
