"""Serving benchmark (not a test): ``python bench/serving.py``.

Two models built here (an MLP 256->512->512->10 and a transformer encoder: 4 layers,
d_model 256, 4 heads, ff 1024, input [batch, 64, 256]) are served by ``kubemaas serve``
pinned to one core while a load generator pinned to the other core drives them (wrk with a
Lua body when ``wrk`` is installed, else a raw-socket asyncio generator in Python). Every
request carries one example. Each row is compared, in the same run, with

* in-process ONNX Runtime at batch 1 on the same core (the compute ceiling), and
* a bare ASGI app under the same uvicorn that parses the same body and returns a constant
  (the HTTP floor).

Prints a markdown table and writes it to bench/results/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serving.md"
CONCURRENCY = (1, 8, 32)
SERVER_CORE = 0
LOAD_CORE = 1


# --------------------------------------------------------------------------- models


def build_mlp(directory: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [256, 512, 512, 10]
    inits, nodes, prev = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"))
        last = i == len(dims) - 2
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], ["logits" if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), directory / "model.onnx")
    return directory


def build_encoder(directory: Path) -> Path:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).eval()
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder, (torch.zeros(1, 64, 256),), str(directory / "model.onnx"),
            input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    return directory


@dataclass
class Body:
    name: str
    payload: bytes
    header_length: int | None = None


def json_body(shape: list[int], seed: int) -> Body:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    doc = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": x.ravel().tolist()}]}
    return Body("json", json.dumps(doc).encode())


def binary_body(shape: list[int], seed: int) -> Body:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    header = json.dumps({
        "inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return Body("binary", header + x.tobytes(), len(header))


# --------------------------------------------------------------------------- the HTTP floor

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def floor_app(scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
    """Reads the body, parses it like the server must (orjson; the binary part as an array), answers a constant."""
    import orjson

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    length = next((int(v) for k, v in scope["headers"] if k == b"inference-header-content-length"), None)
    if not body:
        pass  # a readiness probe
    elif length is None:
        orjson.loads(body)
    else:
        orjson.loads(body[:length])
        np.frombuffer(body, dtype=np.float32, offset=length)
    out = b'{"outputs":[]}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def run_floor(port: int) -> None:
    import uvicorn

    uvicorn.run(floor_app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


# --------------------------------------------------------------------------- in-process ORT


def run_ort(model_dir: str, shape: list[int], seconds: float) -> None:
    """Batch-1 session.run in a loop on this (pinned) core; prints req/s, p50, p99 as JSON."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(Path(model_dir) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        session.run(None, {"x": x})
    times = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        session.run(None, {"x": x})
        times.append(time.perf_counter() - now)
    times.sort()
    # What batching can buy at best: rows/s at each batch size on the same core, timed
    # round-robin, twice in a row each (each size keeps its fastest run), like the server's own
    # warm-up measurement.
    sizes = (1, 2, 4, 8, 16, 32)
    feeds = {n: np.repeat(x, n, axis=0) for n in sizes}
    for n in sizes:
        session.run(None, {"x": feeds[n]})
    best = dict.fromkeys(sizes, float("inf"))
    spent_total = 0.0
    rounds = 0
    while rounds < 3 or spent_total < seconds:
        for n in sizes:
            for _ in range(2):  # the first run after another size finds the caches cold
                t0 = time.perf_counter()
                session.run(None, {"x": feeds[n]})
                dt = time.perf_counter() - t0
                spent_total += dt
                best[n] = min(best[n], dt)
        rounds += 1
    rates = {n: n / best[n] for n in sizes}
    # What JSON costs per request on this core, through the server's own codec: decode the
    # body into an array, encode the output; and orjson.loads alone (no array), which no
    # Python JSON server gets below.
    import orjson

    from kubemaas_runtime.serving.codec import decode_infer, encode_infer
    from kubemaas_runtime.serving.model import load_model

    model = load_model(Path(model_dir))
    body = json_body(shape, 2).payload
    request = decode_infer(body, None, model)
    outputs, _ = model.run(request.inputs)
    n = 100

    def per_call(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    decode = per_call(lambda: decode_infer(body, None, model))
    encode = per_call(lambda: encode_infer(model, request, outputs))
    loads_only = per_call(lambda: orjson.loads(body))
    # req/s from the median call: the mean would let a neighbour's burst of load on this
    # shared machine lower the ceiling every ratio is taken against (never raise it).
    print(json.dumps({"rps": 1.0 / times[len(times) // 2], "mean_rps": len(times) / sum(times), "p50": times[len(times) // 2] * 1e3,
                      "p99": times[int(len(times) * 0.99)] * 1e3, "b32_rows_per_s": rates[32],
                      "rates": {str(k): v for k, v in rates.items()}, "body_bytes": len(body),
                      "json_decode_ms": decode, "json_encode_ms": encode, "orjson_loads_ms": loads_only}))


# --------------------------------------------------------------------------- load generators


@dataclass
class Load:
    rps: float
    p50: float
    p99: float
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, body: Path, header_length: int | None, connections: int, seconds: float, workdir: Path) -> Load:
    script = workdir / f"body-{body.stem}.lua"
    headers = ['wrk.headers["Content-Type"] = "application/json"']
    if header_length is not None:
        headers.append(f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n' + "\n".join(headers) + "\n"
    )
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    return Load(rps, p50, p99, (int(bad.group(1)) if bad else 0) + (int(errors.group(1)) if errors else 0))


async def _py_load(host: str, port: int, path: str, body: Body, connections: int, seconds: float) -> Load:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body.payload)}\r\n")
    if body.header_length is not None:
        head += f"Inference-Header-Content-Length: {body.header_length}\r\n"
    request = head.encode() + b"\r\n" + body.payload
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if b" 200 " not in status_line:
                errors += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Load(len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3,
                latencies[int(len(latencies) * 0.99)] * 1e3, errors)


def py_load(url: str, body: Body, connections: int, seconds: float) -> Load:
    m = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert m
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CORE})
    try:
        return asyncio.run(_py_load(m.group(1), int(m.group(2)), m.group(3), body, connections, seconds))
    finally:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(SERVER_CORE), *cmd] if shutil.which("taskset") else cmd


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {deadline_s}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def batch_cap(metrics_url: str) -> int:
    """The batch cap the server runs with (chosen at warm-up when auto), from its /metrics."""
    import httpx

    text = httpx.get(metrics_url, timeout=10).text
    match = re.search(r"^kubemaas_max_batch_rows\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """A process's resident set (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Burst:
    clients: int
    body_mib: float
    rss_before: float
    rss_peak: float
    statuses: dict[int, int]


def burst_rss(model_dir: Path, clients: int = 256, body_mib: float = 4.0) -> Burst:
    """RSS of a server (max_queue 8, default buffered-bytes bound) while ``clients`` connections
    each send a ``body_mib`` MiB body at once (issue 10, fault 8: memory must follow the admitted
    work, not the number of connections)."""
    import asyncio

    port = free_port()
    env = {**os.environ, "KUBEMAAS_MAX_QUEUE": "8", "KUBEMAAS_LOG_LEVEL": "warning", "KUBEMAAS_BATCH_AXIS": "0"}
    proc = subprocess.Popen(
        pinned([sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(model_dir),
                "--name", "m", "--host", "127.0.0.1", "--port", str(port)]), env=env,
    )
    body = b" " * int(body_mib * 1024 * 1024)
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head % len(body))
            writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # answered early (503) and closed while we were still sending
        try:
            status = int((await reader.readline()).split()[1])
        except (ConnectionError, OSError, IndexError, ValueError):
            status = 0
        writer.close()
        return status

    async def all_at_once() -> list[int]:
        return await asyncio.gather(*(one() for _ in range(clients)))

    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        before = rss_mib(proc.pid)
        statuses = asyncio.run(all_at_once())
        peak = rss_mib(proc.pid, "VmHWM")
    finally:
        stop(proc)
    counts: dict[int, int] = {}
    for code in statuses:
        counts[code] = counts.get(code, 0) + 1
    return Burst(clients, body_mib, before, peak, counts)


@dataclass
class Row:
    model: str
    body: str
    server: str
    concurrency: int
    load: Load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load run")
    parser.add_argument("--floor-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ort", nargs=2, metavar=("MODEL_DIR", "SHAPE"), help=argparse.SUPPRESS)
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--models", default="mlp,encoder", help="comma-separated subset of mlp,encoder")
    args = parser.parse_args(argv)
    if args.floor_port:
        run_floor(args.floor_port)
        return 0
    if args.ort:
        run_ort(args.ort[0], json.loads(args.ort[1]), args.seconds)
        return 0

    use_wrk = shutil.which("wrk") is not None and not args.python_load
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="kubemaas-bench-"))
    wanted = args.models.split(",")
    builders = {"mlp": (build_mlp, [1, 256]), "encoder": (build_encoder, [1, 64, 256])}
    models = {name: (build(work / name), shape) for name, (build, shape) in builders.items() if name in wanted}
    all_bodies: dict[str, list[Body]] = {
        "mlp": [json_body([1, 256], 1)],
        "encoder": [json_body([1, 64, 256], 2), binary_body([1, 64, 256], 2)],
    }
    bodies = {name: b for name, b in all_bodies.items() if name in wanted}
    files: dict[tuple[str, str], Path] = {}
    for model, items in bodies.items():
        for b in items:
            files[(model, b.name)] = work / f"{model}-{b.name}.body"
            files[(model, b.name)].write_bytes(b.payload)

    def drive(url: str, model: str, body: Body, c: int, seconds: float | None = None) -> Load:
        s = args.seconds if seconds is None else seconds
        if use_wrk:
            return wrk(url, files[(model, body.name)], body.header_length, c, s, work)
        return py_load(url, body, c, s)

    ort_results: dict[str, dict[str, Any]] = {}
    caps: dict[tuple[str, str], int] = {}
    rows: list[Row] = []
    for model, (directory, shape) in models.items():
        out = subprocess.run(
            pinned([sys.executable, __file__, "--ort", str(directory), json.dumps(shape), "--seconds", str(args.seconds)]),
            capture_output=True, text=True, check=True,
        ).stdout
        ort_results[model] = json.loads(out.strip().splitlines()[-1])
        print(f"in-process ORT {model}: {ort_results[model]}", flush=True)
        # The floor and both servers run side by side (all pinned to the same core, idle when
        # not driven) and are driven in turn at each concurrency, so drift in the machine's
        # load hits all three alike.
        urls: dict[str, str] = {}
        procs: list[subprocess.Popen[bytes]] = []
        try:
            port = free_port()
            procs.append(subprocess.Popen(pinned([sys.executable, __file__, "--floor-port", str(port)])))
            wait_http(f"http://127.0.0.1:{port}/", procs[-1])
            urls["floor"] = f"http://127.0.0.1:{port}/"
            # "on" is what a user gets (auto cap under 32); "8 fixed" shows, side by side, what a
            # cap that ignores the measurement does.
            for batching, max_batch, auto in (("off", "1", "true"), ("on", "32", "true"), ("8 fixed", "8", "false")):
                port = free_port()
                # Bare graphs declare no batch axis; both bench models have independent rows on axis 0.
                env = {**os.environ, "KUBEMAAS_MAX_BATCH_SIZE": max_batch, "KUBEMAAS_AUTO_BATCH_SIZE": auto,
                       "KUBEMAAS_BATCH_AXIS": "0", "KUBEMAAS_LOG_LEVEL": "warning"}
                procs.append(subprocess.Popen(
                    pinned([sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(directory),
                            "--name", model, "--host", "127.0.0.1", "--port", str(port)]),
                    env=env,
                ))
                wait_http(f"http://127.0.0.1:{port}/v2/health/ready", procs[-1])
                urls[f"kubemaas batching {batching}"] = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
                caps[(model, batching)] = batch_cap(f"http://127.0.0.1:{port}/metrics")
            for body in bodies[model]:
                for url in urls.values():
                    drive(url, model, body, 8, 1.0)  # warm-up: connections, allocator, ORT arenas
                for c in CONCURRENCY:
                    for server, url in urls.items():
                        rows.append(Row(model, body.name, server, c, drive(url, model, body, c)))
                        print(f"{server} {model} {body.name} c={c}: {rows[-1].load}", flush=True)
        finally:
            for proc in procs:
                stop(proc)

    burst = burst_rss(models["mlp"][0]) if "mlp" in models else None
    table = render(rows, ort_results, caps, use_wrk, time.monotonic() - started, (load_before, os.getloadavg()[0]))
    if burst is not None:
        table += (
            f"\nMemory under a burst (MLP server, max_queue 8, max_buffered_bytes 64 MiB): {burst.clients} "
            f"connections sending {burst.body_mib:.0f} MiB bodies at once took RSS from {burst.rss_before:.0f} MiB to a "
            f"peak of {burst.rss_peak:.0f} MiB; answers by status: {dict(sorted(burst.statuses.items()))} "
            "(400: admitted and read, not JSON; 503: refused before the body was read).\n"
        )
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def render(
    rows: list[Row], ort_results: dict[str, dict[str, Any]], caps: dict[tuple[str, str], int], used_wrk: bool,
    elapsed: float, load: tuple[float, float],
) -> str:
    floors = {(r.model, r.body, r.concurrency): r.load for r in rows if r.server == "floor"}
    sizes = ["1", "2", "4", "8", "16", "32"]
    lines = [
        "# Serving benchmark",
        "",
        f"`python bench/serving.py`: server pinned to core {SERVER_CORE}, load generator "
        f"({'wrk' if used_wrk else 'Python asyncio sockets'}) pinned to core {LOAD_CORE}; one example per request; "
        f"ONNX Runtime with 1 intra-op thread; run took {elapsed:.0f} s on {os.cpu_count()} cores "
        f"(1-minute load average {load[0]:.1f} at start, {load[1]:.1f} at end: above ~2 other work shared the cores). "
        "ORT batch-1 req/s is 1 / the median call time. "
        "\"batching off\" is max_batch_size=1; \"batching on\" is max_batch_size=32 with the default "
        "auto_batch_size, which times ONNX Runtime at warm-up and caps batches at the smallest size within 5% "
        "of the best rows/s (the cap it chose is in the next table); \"batching 8 fixed\" is max_batch_size=8 "
        "with auto_batch_size=false.",
        "",
        "| model | ORT batch-1 in-process req/s | p50 ms | p99 ms | rows/s at batch " + " / ".join(sizes)
        + " (x batch 1, fastest of round-robin runs) | server cap chosen | JSON body KB | codec decode ms/req "
        "| codec encode ms/resp | orjson.loads alone ms |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model, o in ort_results.items():
        rates = o["rates"]
        ratios = " / ".join(f"{rates[n] / rates['1']:.2f}" for n in sizes)
        lines.append(
            f"| {model} | {o['rps']:.0f} | {o['p50']:.3f} | {o['p99']:.3f} | {ratios} | {caps.get((model, 'on'), -1)} "
            f"| {o['body_bytes'] / 1024:.0f} | {o['json_decode_ms']:.3f} | {o['json_encode_ms']:.3f} "
            f"| {o['orjson_loads_ms']:.3f} |"
        )
    lines += [
        "",
        "| model | body | server | conc. | req/s | p50 ms | p99 ms | p99/p50 | x ORT b1 req/s | x floor req/s | p50 - floor p50 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f = floors[(r.model, r.body, r.concurrency)]
        ort_rps = ort_results[r.model]["rps"]
        lines.append(
            f"| {r.model} | {r.body} | {r.server} | {r.concurrency} | {r.load.rps:.0f} | {r.load.p50:.2f} | "
            f"{r.load.p99:.2f} | {r.load.p99 / r.load.p50:.1f} | {r.load.rps / ort_rps:.2f} | {r.load.rps / f.rps:.2f} | "
            f"{r.load.p50 - f.p50:+.2f} | {r.load.errors} |"
        )
    lines += ["", "Targets (issue 2):", ""]

    def get(model: str, body: str, server: str, c: int) -> Load:
        return next(r.load for r in rows if (r.model, r.body, r.server, r.concurrency) == (model, body, server, c))

    on, off = "kubemaas batching on", "kubemaas batching off"
    if "mlp" in ort_results:
        lines.extend(_mlp_targets(get, floors, on, off))
    if "encoder" in ort_results:
        lines.extend(_encoder_targets(get, floors, ort_results, on))
    lines.append("")
    return "\n".join(lines)


def _mlp_targets(get: Callable[[str, str, str, int], Load], floors: dict[tuple[str, str, int], Load], on: str, off: str) -> list[str]:
    lines = []
    mlp32 = get("mlp", "json", on, 32)
    ratio = mlp32.rps / floors[("mlp", "json", 32)].rps
    lines.append(f"- MLP c=32 batching on >= 0.4x floor req/s: {ratio:.2f}x -> {'met' if ratio >= 0.4 else 'NOT met'}")
    for server in (off, on):
        d = get("mlp", "json", server, 1).p50 - floors[("mlp", "json", 1)].p50
        lines.append(f"- MLP c=1 ({server[9:]}) p50 within 0.5 ms of floor: {d:+.2f} ms -> {'met' if d <= 0.5 else 'NOT met'}")
    return lines


def _encoder_targets(
    get: Callable[[str, str, str, int], Load], floors: dict[tuple[str, str, int], Load],
    ort_results: dict[str, dict[str, Any]], on: str,
) -> list[str]:
    o = ort_results["encoder"]
    rates = o["rates"]
    best_rate = max(rates.values())
    best_batched = best_rate / rates["1"]
    # ONNX Runtime time per row at the best batch size: the batch-1 loop's mean time scaled by
    # the best size's gain (both rates in that ratio are fastest-of-runs, so they compare).
    row_ms = 1e3 / (o["rps"] * best_batched)
    # Per request on the one server core: compute at the best batch size, plus what the HTTP
    # floor spends on the same body (its own req/s at c=32), plus the codec for JSON.
    ceilings = {}
    for body in ("json", "binary"):
        http_ms = 1e3 / floors[("encoder", body, 32)].rps
        codec_ms = o["json_decode_ms"] + o["json_encode_ms"] if body == "json" else 0.0
        ceilings[body] = (1e3 / (row_ms + http_ms + codec_ms)) / o["rps"]
    lower_json = (1e3 / (row_ms + o["orjson_loads_ms"])) / o["rps"]
    lines = [
        f"- encoder ceilings measured in this run: the best batch size buys {best_batched:.2f}x batch-1 rows/s "
        f"on one core; adding the HTTP floor's own per-request cost (and, for JSON, this codec's decode + encode) "
        f"the best a server on this core could reach is {ceilings['json']:.2f}x (json) and {ceilings['binary']:.2f}x "
        f"(binary) ORT batch-1 req/s. With orjson.loads alone as the JSON cost (no array, no response, no HTTP), "
        f"{lower_json:.2f}x."
    ]
    for body, target in (("json", 0.9), ("binary", 1.0)):
        load = get("encoder", body, on, 32)
        ratio = load.rps / o["rps"]
        spread = load.p99 / load.p50
        lines.append(
            f"- encoder c=32 batching on, {body}: {ratio:.2f}x ORT batch-1 (target >= {target}) -> "
            f"{'met' if ratio >= target else 'NOT met'} ({ratio / ceilings[body]:.2f} of this run's ceiling); "
            f"p99/p50 {spread:.1f} (target <= 2) -> {'met' if spread <= 2 else 'NOT met'}"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
