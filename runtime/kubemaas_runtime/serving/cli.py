"""``kubemaas serve --model-dir DIR [--name NAME] [--host H] [--port P] [batching, thread and auth flags]``.

Flags override the ``KUBEMAAS_*`` environment (``ServingSettings``); nothing happens at import.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

from kubemaas_runtime.bundle import BundleError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", dest="model_dir", help="bundle directory or one holding model.onnx")
    parser.add_argument("--name", dest="model_name", help="served model name (default: manifest name, else directory name)")
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default 8080)")
    parser.add_argument("--max-batch-size", type=int, dest="max_batch_size", help="rows per batch; 1 disables batching")
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
        settings.bearer_token()  # fail now on an unreadable or empty token file
        model = load_model(
            settings.model_dir,
            settings.model_name,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors())
        sys.stderr.write(f"kubemaas serve: invalid settings: {problems}\n")
        return 2
    except (BundleError, ValueError) as exc:
        sys.stderr.write(f"kubemaas serve: {exc}\n")
        return 1
    return serve(create_app(settings, model), settings)
