"""``kubemaas demo``: both lineages on one machine, no cluster needed.

Classification: train (2 torch.distributed ranks on loopback) -> compress (accuracy gate) -> serve
(``kubemaas serve`` on localhost) -> real v2 requests. Text generation: train the ``textgen``
recipe (same ranks) -> weight-only int4/int8 (perplexity gate) -> ``kubemaas serve`` (OpenAI API)
-> a completion streamed token by token -> a short load test (tokens/s, time to first token).
Then a short report of both.

Every stage runs the same ``kubemaas`` subcommand a pod runs, as a local process with
the same environment contract the operator sets; only the orchestration is local.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubemaas_runtime.demo_textgen import (
    CompletionError,
    format_textgen_report,
    load_test,
    make_streamer,
    served_model,
)
from kubemaas_runtime.demo_textgen import Request as CompletionRequest
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
    textgen: bool = True
    """Run the text-generation lineage after the classification one."""
    textgen_params: dict[str, str] = Field(default_factory=dict)
    """``--set`` hyper-parameters of the ``textgen`` recipe (its defaults are the demo size)."""
    textgen_epochs: int | None = Field(default=None, ge=1)
    """Training epochs of the language model (None: the recipe's default)."""
    textgen_mode: Literal["auto", "int4", "int8", "none"] = "auto"
    """Text-generation compression mode."""
    max_perplexity_increase: float = Field(default=0.05, ge=0.0)
    """Perplexity gate: the largest ``ppl / ppl_fp32 - 1`` a quantized variant may have."""
    prompt: str = "The import statement"
    """Prompt of the completion that is streamed to the terminal."""
    stream_tokens: int = Field(default=48, ge=1)
    """``max_tokens`` of that completion."""
    load_clients: int = Field(default=8, ge=1)
    """Concurrent streams in the load test."""
    load_requests: int = Field(default=32, ge=1)
    """Requests in the load test (spread over the clients)."""
    load_tokens: int = Field(default=64, ge=1)
    """Tokens each load-test request generates (``ignore_eos``, so exactly this many)."""
    client: Literal["auto", "openai", "http"] = "auto"
    """``openai``: the official client; ``http``: the standard library; ``auto``: openai when installed."""


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
    parser.add_argument("--no-textgen", dest="textgen", action="store_false", default=defaults.textgen,
                        help="skip the text-generation lineage")
    parser.add_argument("--textgen-set", dest="textgen_params", action="append",
                        default=[f"{k}={v}" for k, v in defaults.textgen_params.items()], metavar="KEY=VALUE", help="a textgen recipe hyper-parameter (repeatable)")
    parser.add_argument("--textgen-epochs", type=int, default=defaults.textgen_epochs)
    parser.add_argument("--textgen-mode", default=defaults.textgen_mode, choices=["auto", "int4", "int8", "none"])
    parser.add_argument("--max-perplexity-increase", type=float, default=defaults.max_perplexity_increase)
    parser.add_argument("--prompt", default=defaults.prompt)
    parser.add_argument("--stream-tokens", type=int, default=defaults.stream_tokens)
    parser.add_argument("--load-clients", type=int, default=defaults.load_clients)
    parser.add_argument("--load-requests", type=int, default=defaults.load_requests)
    parser.add_argument("--load-tokens", type=int, default=defaults.load_tokens)
    parser.add_argument("--client", default=defaults.client, choices=["auto", "openai", "http"])


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["hidden=64", "layers=2"]`` -> ``{"hidden": "64", "layers": "2"}``; raises ValueError naming a bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--textgen-set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The settings ``configure``'s flags describe; raises ValueError (pydantic's included) naming a bad one."""
    return DemoSettings(
        workdir=args.workdir, ranks=args.ranks, epochs=args.epochs, mode=args.mode,
        max_accuracy_drop=args.max_accuracy_drop, latency_requests=args.latency_requests,
        textgen=args.textgen, textgen_params=parse_sets(args.textgen_params), textgen_epochs=args.textgen_epochs,
        textgen_mode=args.textgen_mode, max_perplexity_increase=args.max_perplexity_increase,
        prompt=args.prompt, stream_tokens=args.stream_tokens, load_clients=args.load_clients,
        load_requests=args.load_requests, load_tokens=args.load_tokens, client=args.client,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        _say(f"kubemaas demo: {exc}")
        return 2
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
    return _compress(["--mode", settings.mode, "--max-accuracy-drop", str(settings.max_accuracy_drop)],
                     bundle, output, logs, settings.timeout_s)


def _compress(options: list[str], bundle: Path, output: Path, logs: Path, timeout_s: float) -> dict[str, Any]:
    """``kubemaas compress --bundle B --output O <options>``; returns its termination message."""
    log_path = logs / "compress.log"
    with log_path.open("w") as sink:
        code = subprocess.call(
            kubemaas_cmd("compress", "--bundle", str(bundle), "--output", str(output), *options),
            stdout=sink, stderr=subprocess.STDOUT, timeout=timeout_s,
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


def run_demo(settings: DemoSettings, log: Callable[[str], None],
             write: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both lineages in ``settings.workdir`` (wiped first); ``write`` prints streamed text without a newline."""
    work = settings.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    logs = work / "logs"
    logs.mkdir(parents=True)
    bundle, compressed = work / "bundle", work / "compressed"
    steps = 8 if settings.textgen else 4

    started = time.monotonic()
    log(f"[1/{steps}] training '{settings.recipe}' with {settings.ranks} torch.distributed ranks on loopback")
    trained = train(settings, bundle, logs, log)
    log(f"      bundle written to {bundle} ({time.monotonic() - started:.1f}s)")

    t = time.monotonic()
    log(f"[2/{steps}] compressing (mode {settings.mode}, max accuracy drop {settings.max_accuracy_drop})")
    compression = compress(settings, bundle, compressed, logs)
    log(f"      selected {compression.get('selected')} ({time.monotonic() - t:.1f}s)")

    log(f"[3/{steps}] serving the selected variant with kubemaas serve")
    with serve(compressed, logs, settings.timeout_s) as base:
        log(f"      ready at {base}")
        log(f"[4/{steps}] sending v2 requests: the held-out set in batches of 32, then single rows for latency")
        served = query(base, compressed, settings)
    report: dict[str, Any] = {"training": trained, "compression": compression, "serving": served,
                              "workdir": str(work)}
    if settings.textgen:
        report["textgen"] = run_textgen(settings, work / "textgen", log, write or _write)
    report["seconds"] = time.monotonic() - started
    return report


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def train_textgen(settings: DemoSettings, bundle: Path, logs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The ``textgen`` recipe on ``settings.ranks`` local ranks, through the same launcher as ``train``."""

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            test_loss = float(event.get("testLoss", 0.0))
            log(f"  epoch {event.get('epoch')}/{event.get('epochs')}  train loss {float(event.get('loss', 0.0)):.3f}  "
                f"held-out perplexity {math.exp(min(test_loss, 700.0)):.1f}  "
                f"{float(event.get('samplesPerSecond', 0.0)) * seq_len:.0f} tokens/s")

    seq_len = int(settings.textgen_params.get("seq_len", "64"))
    argv = ["--recipe", "textgen", "--output", str(bundle)]
    if settings.textgen_epochs is not None:
        argv += ["--epochs", str(settings.textgen_epochs)]
    for key, value in settings.textgen_params.items():
        argv += ["--set", f"{key}={value}"]
    try:
        return run_local(settings.ranks, argv, on_event=progress, log_dir=logs / "train", timeout_s=settings.timeout_s)
    except LaunchError as exc:
        raise DemoError(f"text-generation training failed: {exc}") from exc


def run_textgen(settings: DemoSettings, work: Path, log: Callable[[str], None],
                write: Callable[[str], None]) -> dict[str, Any]:
    """train -> int4/int8 (perplexity gate) -> ``kubemaas serve`` -> one streamed completion -> load test."""
    logs = work / "logs"
    logs.mkdir(parents=True)
    bundle, compressed = work / "bundle", work / "compressed"

    t = time.monotonic()
    log(f"[5/8] training 'textgen' (a Llama-style decoder, BPE on pydoc_data.topics) with {settings.ranks} "
        "torch.distributed ranks on loopback")
    trained = train_textgen(settings, bundle, logs, log)
    log(f"      onnxruntime-genai folder written to {bundle} ({time.monotonic() - t:.1f}s)")

    t = time.monotonic()
    log(f"[6/8] quantizing weight-only int4/int8 (mode {settings.textgen_mode}, "
        f"max perplexity increase {settings.max_perplexity_increase:g})")
    compression = _compress(["--mode", settings.textgen_mode,
                             "--max-perplexity-increase", str(settings.max_perplexity_increase)],
                            bundle, compressed, logs, settings.timeout_s)
    log(f"      selected {compression.get('selected')} ({time.monotonic() - t:.1f}s)")

    t = time.monotonic()
    log("[7/8] serving the selected variant with kubemaas serve (OpenAI-compatible API)")
    with serve(compressed, logs, settings.timeout_s) as base:
        log(f"      ready at {base}/v1 ({time.monotonic() - t:.1f}s)")
        try:
            model = served_model(base)
            streamer = make_streamer(settings.client, base, model)
            log(f"[8/8] streaming a completion through the {streamer.name}, token by token:")
            write(settings.prompt)
            stream = streamer.stream(CompletionRequest(settings.prompt, settings.stream_tokens), on_text=write)
            write("\n")
            log(f"      load test: {settings.load_clients} concurrent streams, {settings.load_requests} requests "
                f"of {settings.load_tokens} tokens")
            load = load_test(streamer, PROMPTS, clients=settings.load_clients, requests=settings.load_requests,
                             max_tokens=settings.load_tokens)
        except (CompletionError, ImportError, OSError, KeyError, ValueError) as exc:
            raise DemoError(f"text generation through the server failed: {exc}") from exc
    return {"training": trained, "compression": compression, "model": model, "url": base,
            "client": streamer.name, "stream": asdict(stream), "load": asdict(load)}


PROMPTS = ["The import statement", "A class definition", "Lists are", "The with statement",
           "Exceptions", "A function", "Dictionaries", "The for loop"]
"""Load-test prompts (the demo model was trained on Python's documentation)."""


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
    text = "\n".join(lines) + "\n"
    if report.get("textgen"):
        text += format_textgen_report(report["textgen"])
    return text + f"\nartifacts in {report['workdir']} (total {report['seconds']:.1f}s)\n"
