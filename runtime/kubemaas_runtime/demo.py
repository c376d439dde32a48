"""``kubemaas demo``: the whole lineage on one machine, no cluster needed.

train (2 torch.distributed ranks on loopback) -> compress (accuracy gate) -> serve
(``kubemaas serve`` on localhost) -> real v2 requests -> a short report.

Every stage runs the same ``kubemaas`` subcommand a pod runs, as a local process with
the same environment contract the operator sets; only the orchestration is local.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubemaas_runtime.serving.process import ServeProcess, ServeProcessError, log_tail
from kubemaas_runtime.training.launch import LaunchError, run_local


class DemoSettings(BaseSettings):
    """Settings of ``kubemaas demo`` (env prefix ``KUBEMAAS_DEMO_``)."""

    model_config = SettingsConfigDict(env_prefix="KUBEMAAS_DEMO_")

    workdir: Path = Path("out/demo")
    """Where the bundle, the compressed variants and the logs are written (wiped first)."""
    ranks: int = Field(default=2, ge=1, le=8)
    """How many torch.distributed ranks (local processes) train the recipe."""
    recipe: str = "digits"
    """The built-in training recipe."""
    epochs: int = Field(default=12, ge=1)
    """Training epochs."""
    mode: str = "auto"
    """Compression mode: auto, int8-dynamic, int8-static, fp16 or none."""
    max_accuracy_drop: float = Field(default=0.01, ge=0.0, le=1.0)
    """Accuracy gate for compression: the largest top-1 drop a variant may have."""
    latency_requests: int = Field(default=200, ge=1)
    """Single-row v2 requests sent to measure end-to-end latency."""
    timeout_s: float = Field(default=900.0, gt=0)
    """Deadline for each stage."""


class DemoError(RuntimeError):
    """A stage failed; the message names it and carries its log tail."""


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = DemoSettings()
    parser.add_argument("--workdir", type=Path, default=defaults.workdir)
    parser.add_argument("--ranks", type=int, default=defaults.ranks)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--mode", default=defaults.mode,
                        choices=["auto", "int8-dynamic", "int8-static", "fp16", "none"])
    parser.add_argument("--max-accuracy-drop", type=float, default=defaults.max_accuracy_drop)
    parser.add_argument("--latency-requests", type=int, default=defaults.latency_requests)


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        workdir=args.workdir, ranks=args.ranks, epochs=args.epochs, mode=args.mode,
        max_accuracy_drop=args.max_accuracy_drop, latency_requests=args.latency_requests,
    )
    try:
        report = run_demo(settings, log=_say)
    except DemoError as exc:
        _say(f"demo failed: {exc}")
        return 1
    sys.stdout.write(format_report(report))
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def kubemaas_cmd(*args: str) -> list[str]:
    """The console script, run with this interpreter so the demo needs no PATH set-up."""
    return [sys.executable, "-m", "kubemaas_runtime.cli", *args]


def train(settings: DemoSettings, bundle: Path, logs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run ``settings.ranks`` ``kubemaas train`` processes with the pod env contract on loopback."""

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            log(f"  epoch {event.get('epoch')}/{event.get('epochs')}  "
                f"loss {float(event.get('loss', 0.0)):.4f}  "
                f"accuracy {float(event.get('accuracy', 0.0)):.4f}")

    argv = ["--recipe", settings.recipe, "--output", str(bundle), "--epochs", str(settings.epochs)]
    try:
        return run_local(settings.ranks, argv, on_event=progress, log_dir=logs / "train",
                         timeout_s=settings.timeout_s)
    except LaunchError as exc:
        raise DemoError(f"training failed: {exc}") from exc


def compress(settings: DemoSettings, bundle: Path, output: Path, logs: Path) -> dict[str, Any]:
    log_path = logs / "compress.log"
    with log_path.open("w") as sink:
        code = subprocess.call(
            kubemaas_cmd("compress", "--bundle", str(bundle), "--output", str(output),
                         "--mode", settings.mode, "--max-accuracy-drop", str(settings.max_accuracy_drop)),
            stdout=sink, stderr=subprocess.STDOUT, timeout=settings.timeout_s,
            env={**os.environ, "KUBEMAAS_TERMINATION_LOG": str(logs / "compress-termination.json")},
        )
    if code != 0:
        raise DemoError(f"compression exited {code}:\n{log_tail(log_path)}")
    # The same summary the operator reads from the compression pod's termination message.
    report: dict[str, Any] = json.loads((logs / "compress-termination.json").read_text())
    return report


@contextmanager
def serve(model_dir: Path, logs: Path, timeout_s: float) -> Iterator[str]:
    """Start ``kubemaas serve`` on a free loopback port; yield its base URL; drain on exit."""
    server = ServeProcess(model_dir, logs / "serve.log", clean_env=False).start()
    try:
        try:
            server.wait_ready(timeout_s)
        except ServeProcessError as exc:
            raise DemoError(str(exc)) from exc
        yield server.url
    finally:
        server.stop()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except urllib.error.HTTPError as exc:
        raise DemoError(f"POST {url} -> {exc.code}: {exc.read().decode(errors='replace')}") from exc


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def query(base: str, model_dir: Path, settings: DemoSettings) -> dict[str, Any]:
    """Send the held-out set in batches of 32 and time single-row requests."""
    meta = _get(f"{base}/v2/models/{_model_name(model_dir)}")
    name = meta["name"]
    inp = meta["inputs"][0]
    infer_url = f"{base}/v2/models/{name}/infer"
    with np.load(model_dir / "eval.npz", allow_pickle=False) as data:
        inputs = np.asarray(data["inputs"], dtype=np.float32)
        labels = np.asarray(data["labels"])
    predictions: list[int] = []
    for start in range(0, len(inputs), 32):
        rows = inputs[start:start + 32]
        resp = _post(infer_url, {"id": f"eval-{start}", "inputs": [
            {"name": inp["name"], "shape": list(rows.shape), "datatype": inp["datatype"],
             "data": rows.ravel().tolist()}]})
        out = resp["outputs"][0]
        logits = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        predictions.extend(int(i) for i in logits.argmax(axis=1))
    accuracy = float(np.mean(np.asarray(predictions) == labels))
    samples = []
    for i in range(3):
        samples.append({"label": int(labels[i]), "predicted": predictions[i]})
    latencies = []
    one = inputs[:1]
    body = {"inputs": [{"name": inp["name"], "shape": list(one.shape), "datatype": inp["datatype"],
                        "data": one.ravel().tolist()}]}
    for _ in range(settings.latency_requests):
        t0 = time.perf_counter()
        _post(infer_url, body)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    lat = np.asarray(latencies)
    return {"name": name, "url": infer_url, "served_accuracy": accuracy, "eval_rows": len(labels),
            "samples": samples, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99))}


def _model_name(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "model.json").read_text())["name"])
    except (OSError, KeyError, json.JSONDecodeError):
        return model_dir.name


def run_demo(settings: DemoSettings, log: Callable[[str], None]) -> dict[str, Any]:
    work = settings.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    logs = work / "logs"
    logs.mkdir(parents=True)
    bundle, compressed = work / "bundle", work / "compressed"

    started = time.monotonic()
    log(f"[1/4] training '{settings.recipe}' with {settings.ranks} torch.distributed ranks on loopback")
    trained = train(settings, bundle, logs, log)
    log(f"      bundle written to {bundle} ({time.monotonic() - started:.1f}s)")

    t = time.monotonic()
    log(f"[2/4] compressing (mode {settings.mode}, max accuracy drop {settings.max_accuracy_drop})")
    compression = compress(settings, bundle, compressed, logs)
    log(f"      selected {compression.get('selected')} ({time.monotonic() - t:.1f}s)")

    log("[3/4] serving the selected variant with kubemaas serve")
    with serve(compressed, logs, settings.timeout_s) as base:
        log(f"      ready at {base}")
        log("[4/4] sending v2 requests: the held-out set in batches of 32, then single rows for latency")
        served = query(base, compressed, settings)
    return {"training": trained, "compression": compression, "serving": served,
            "workdir": str(work), "seconds": time.monotonic() - started}


def format_report(report: dict[str, Any]) -> str:
    training, compression, serving = report["training"], report["compression"], report["serving"]
    metrics = training.get("artifact", {}).get("metrics", training.get("metrics", {}))
    lines = ["", "Kubemaas demo report", "=" * 20]
    if metrics:
        shown = [f"{k}={v:.4f}" if isinstance(v, float) and not v.is_integer() else f"{k}={v:g}"
                 for k, v in sorted(metrics.items()) if isinstance(v, int | float)]
        lines.append("training metrics: " + ", ".join(shown))
    lines.append("")
    lines.append("| variant | size (KB) | p50 b1 (ms) | p50 b32 (ms) | accuracy | drop | gate |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for v in compression.get("variants", []):
        lines.append(
            f"| {v.get('name')} | {v.get('sizeBytes', 0) / 1024:.1f} | {v.get('p50Batch1Ms', 0):.3f} | "
            f"{v.get('p50Batch32Ms', 0):.3f} | {v.get('accuracy', 0):.4f} | {v.get('accuracyDrop', 0):+.4f} | "
            f"{'pass' if v.get('passed') else 'FAIL'} |")
    lines.append(f"selected: {compression.get('selected')} ({compression.get('reason', '')})")
    lines.append("")
    lines.append(f"served model '{serving['name']}' at {serving['url']}")
    lines.append(f"held-out accuracy through the server: {serving['served_accuracy']:.4f} "
                 f"on {serving['eval_rows']} rows")
    for s in serving["samples"]:
        lines.append(f"  digit {s['label']} -> predicted {s['predicted']}")
    lines.append(f"single-row latency over HTTP: p50 {serving['p50_ms']:.2f} ms, p99 {serving['p99_ms']:.2f} ms")
    lines.append(f"artifacts in {report['workdir']} (total {report['seconds']:.1f}s)")
    return "\n".join(lines) + "\n"
