"""Send real Open Inference Protocol v2 requests to a served digits model and check its accuracy.

    python tests/e2e/check_endpoint.py --url 127.0.0.1:18080 --model digits --min-accuracy 0.9

Used by tests/e2e/kind.sh through `kubectl port-forward`. It speaks v2 with the real
tritonclient (HTTP), as a Triton or KServe user would: waits for server and model
readiness, reads the model metadata for the tensor names, sends scikit-learn's digits
held-out split (the digits recipe's own split: stratified, `random_state=0`, 20 %) in
batches, checks the request id echo, and exits non-zero when the accuracy is below
`--min-accuracy`. Prints one JSON line with what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def held_out_digits(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits recipe's held-out split: raw 0..16 pixels as float32, int64 labels."""
    x, y = load_digits(return_X_y=True)
    _, test_x, _, test_y = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=test_fraction, stratify=y, random_state=seed
    )
    return np.asarray(test_x, dtype=np.float32), np.asarray(test_y, dtype=np.int64)


def wait_ready(client: httpclient.InferenceServerClient, model: str, timeout: float) -> None:
    """Poll server and model readiness until both are true or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            if client.is_server_ready() and client.is_model_ready(model):
                return
            last = "server or model not ready"
        except Exception as error:  # connection refused while the forward starts: retry
            last = str(error)
        if time.monotonic() >= deadline:
            raise SystemExit(f"check_endpoint: model {model!r} not ready after {timeout:.0f}s: {last}")
        time.sleep(0.5)


def check(
    url: str, model: str, *, min_accuracy: float, batch: int, test_fraction: float, seed: int, timeout: float
) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url=url, connection_timeout=10.0, network_timeout=30.0)
    wait_ready(client, model, timeout)
    metadata = client.get_model_metadata(model)
    (input_spec,) = metadata["inputs"]
    output_name = metadata["outputs"][0]["name"]
    x, y = held_out_digits(test_fraction, seed)
    predictions: list[np.ndarray] = []
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        tensor = httpclient.InferInput(input_spec["name"], list(rows.shape), input_spec["datatype"])
        tensor.set_data_from_numpy(rows.astype(np.float32))
        request_id = f"e2e-{start}"
        result = client.infer(
            model, [tensor], outputs=[httpclient.InferRequestedOutput(output_name)], request_id=request_id
        )
        response = result.get_response()
        if response.get("id") != request_id:
            raise SystemExit(
                f"check_endpoint: response id {response.get('id')!r} != request id {request_id!r}"
            )
        scores = result.as_numpy(output_name)
        if scores is None or scores.shape[0] != len(rows):
            raise SystemExit(
                f"check_endpoint: output {output_name!r} has shape "
                f"{None if scores is None else scores.shape}, expected {len(rows)} rows"
            )
        predictions.append(np.argmax(scores, axis=1))
    accuracy = float(np.mean(np.concatenate(predictions) == y))
    report = {
        "url": url,
        "model": model,
        "platform": metadata.get("platform"),
        "versions": metadata.get("versions"),
        "rows": len(y),
        "requests": (len(x) + batch - 1) // batch,
        "accuracy": round(accuracy, 4),
        "minAccuracy": min_accuracy,
    }
    print(json.dumps(report))
    if accuracy < min_accuracy:
        raise SystemExit(
            f"check_endpoint: accuracy {accuracy:.4f} on {len(y)} held-out digits is below "
            f"--min-accuracy {min_accuracy}"
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="host:port of the v2 endpoint (no scheme)")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--min-accuracy", type=float, default=0.9, help="fail below this held-out accuracy")
    parser.add_argument("--batch", type=int, default=32, help="rows per request")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="the recipe's held-out share")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's split seed")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_accuracy <= 1.0:
        parser.error(f"--min-accuracy must be within [0, 1], got {args.min_accuracy}")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    check(
        args.url,
        args.model,
        min_accuracy=args.min_accuracy,
        batch=args.batch,
        test_fraction=args.test_fraction,
        seed=args.seed,
        timeout=args.timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
