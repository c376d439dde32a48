"""Open Inference Protocol v2 client that runs INSIDE a test pod of `make e2e` (stdlib only).

The test (tests/e2e/test_realpods.py) mounts this file and the held-out digits (JSON)
from a ConfigMap into a pod of the serving image, so that requests go through the
ModelService's ClusterIP Service, kube-proxy and cluster DNS as any in-cluster client's
would, and never leave the network namespaces the harness made.

    python incluster_client.py accuracy --url http://svc.ns.svc:80 --model digits --data heldout.json
    python incluster_client.py load --url ... --model digits --data heldout.json --stop-file /tmp/stop

`accuracy` sends every held-out row in batches and prints one JSON line: rows, accuracy,
request-id echo failures. `load` sends one-row requests back to back (each with a 10 s
timeout) until the stop file appears or --max-seconds pass, printing a JSON progress line
every 5 s and a final one with ok/failed counts, the first errors and a timeline: ok and
failed requests per wall-clock second (Unix time, the node's clock, which the pods share), so
the test can count what failed between two moments the API server recorded (a canary pod's
Ready, its rollback). Exit status 0 unless the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any


def infer(url: str, model: str, rows: list[list[float]], request_id: str, input_name: str) -> dict[str, Any]:
    """POST one v2 infer request of `rows` (shape [n, 64], FP32); return the decoded response."""
    body = {
        "id": request_id,
        "inputs": [
            {"name": input_name, "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}
        ],
    }
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def input_name(url: str, model: str) -> str:
    """The model's only input tensor, from its v2 metadata."""
    with urllib.request.urlopen(f"{url}/v2/models/{model}", timeout=10) as response:
        return str(json.loads(response.read())["inputs"][0]["name"])


def argmax_rows(response: dict[str, Any], n: int) -> list[int]:
    """Row-wise argmax of the first output (a flat row-major [n, k] list)."""
    data = response["outputs"][0]["data"]
    k = len(data) // n
    rows = [data[i * k : (i + 1) * k] for i in range(n)]
    return [row.index(max(row)) for row in rows]


def accuracy(url: str, model: str, data: dict[str, Any], batch: int) -> dict[str, Any]:
    """Send every held-out row; report the accuracy and the id echo failures."""
    name = input_name(url, model)
    inputs, labels = data["inputs"], data["labels"]
    correct, id_mismatch = 0, 0
    for start in range(0, len(inputs), batch):
        rows = inputs[start : start + batch]
        response = infer(url, model, rows, f"incluster-{start}", name)
        id_mismatch += response.get("id") != f"incluster-{start}"
        predicted = argmax_rows(response, len(rows))
        correct += sum(int(p == y) for p, y in zip(predicted, labels[start : start + batch], strict=True))
    return {
        "mode": "accuracy",
        "rows": len(labels),
        "accuracy": round(correct / len(labels), 4),
        "idMismatch": id_mismatch,
    }


def load(url: str, model: str, data: dict[str, Any], stop_file: str, max_seconds: float) -> dict[str, Any]:
    """One-row requests back to back until `stop_file` exists; count what failed, when and why.

    ``timeline`` lists ``[second, ok, failed]`` for every Unix second in which a request ended.
    """
    name = input_name(url, model)
    inputs = data["inputs"]
    ok, failed = 0, 0
    errors: list[str] = []
    per_second: dict[int, list[int]] = {}
    began = last_report = time.monotonic()
    i = 0
    while not os.path.exists(stop_file) and time.monotonic() - began < max_seconds:
        try:
            infer(url, model, [inputs[i % len(inputs)]], f"load-{i}", name)
            ok += 1
            per_second.setdefault(int(time.time()), [0, 0])[0] += 1
        except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
            failed += 1
            per_second.setdefault(int(time.time()), [0, 0])[1] += 1
            if len(errors) < 10:
                errors.append(f"{time.monotonic() - began:.1f}s: {error!r}")
        i += 1
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            print(json.dumps({"mode": "load", "progress": True, "ok": ok, "failed": failed}), flush=True)
    return {
        "mode": "load",
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "seconds": round(time.monotonic() - began, 1),
        "timeline": [[second, *counts] for second, counts in sorted(per_second.items())],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("mode", choices=["accuracy", "load"])
    parser.add_argument("--url", required=True, help="http://host[:port] of the v2 endpoint")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="JSON with inputs [[64 floats]...] and labels [...]")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--stop-file", default="/tmp/stop")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    with open(args.data) as handle:
        data = json.load(handle)
    if args.mode == "accuracy":
        report = accuracy(args.url, args.model, data, args.batch)
    else:
        print(json.dumps({"mode": "load", "started": True}), flush=True)
        report = load(args.url, args.model, data, args.stop_file, args.max_seconds)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
