"""Text-generation benchmark (not a test): ``python -m bench.generation [--quick]``.

One run, one model (the ``textgen`` recipe at demo size, trained briefly here), side by side:

* **Kubemaas** ``kubemaas serve`` (continuous batching) pinned to one core, streamed to by clients
  on the other core that arrive staggered (``STAGGER_S`` apart), at c = 1, 8, 32: aggregate
  tokens/s, time to first token (TTFT) p50/p99 and inter-token latency (ITL) p50/p99; also c = 32
  with a 0.5 ms GIL switch interval instead of the default 5 ms, to show what that knob does.
* **Static-batching ceiling**: onnxruntime-genai's in-process ``Generator`` at a fixed batch of 32.
* **onnxruntime-genai's Engine as is**: 32 requests submitted at once, in process.
* **The seeds' approach**: ``transformers`` ``generate()`` in a FastAPI handler, one request at a
  time (``bench/naive_textgen_server.py``), same core, c = 8.
* **Compression**: the int4/int8 variants' perplexity increase and single-stream speed.

Every request: a 16-token prompt and exactly ``MAX_TOKENS`` generated tokens (``ignore_eos``).
Prints a markdown table and writes bench/results/generation.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SERVER_CORE, LOAD_CORE = 0, 1
MAX_TOKENS = 64
PROMPT_TOKENS = 16
STAGGER_S = 0.02
MODEL_PARAMS = {"vocab": "4096", "hidden": "256", "layers": "4", "heads": "4", "kv_heads": "4", "ff": "688",
                "seq_len": "64", "context": "512", "max_train_windows": "512"}
"""The issue's reference size (4 layers, 256 wide, 4k BPE; ~5M parameters), trained briefly: speed does
not depend on how well it is trained, and the compression gate is measured on the same weights."""


@dataclass
class Load:
    label: str
    concurrency: int
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    requests: int
    server_ttft_mean_ms: float = float("nan")
    """The server's own view (its histogram's mean), to tell server time from client-side lag."""


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def prompts(bundle: Path, n: int) -> list[list[int]]:
    from kubemaas_runtime.generation.tokenizer import TextTokenizer

    tok = TextTokenizer(bundle)
    ids = tok.encode((bundle / "eval.txt").read_text())
    return [ids[i * PROMPT_TOKENS : (i + 1) * PROMPT_TOKENS] for i in range(n)]


def train(out: Path) -> Path:
    argv = [sys.executable, "-m", "kubemaas_runtime.cli", "train", "--recipe", "textgen", "--output", str(out),
            "--epochs", "1"]
    for k, v in MODEL_PARAMS.items():
        argv += ["--set", f"{k}={v}"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def hf_checkpoint(bundle: Path, out: Path) -> Path:
    """The trained weights as a transformers folder (for the naive anchor)."""
    import torch

    from kubemaas_runtime.training.recipes.textgen import CausalLM, TextgenRecipe

    params = TextgenRecipe().params(MODEL_PARAMS)
    model = CausalLM(params, params.vocab)
    model.load_state_dict(torch.load(bundle / "checkpoint.pt", weights_only=True)["model"])
    model.lm.save_pretrained(out)
    return out


def one_thread_copy(bundle: Path, out: Path) -> Path:
    """The genai folder with ORT pinned to one intra-op thread (as the server runs)."""
    shutil.copytree(bundle, out)
    config = json.loads((out / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].update({"intra_op_num_threads": 1, "inter_op_num_threads": 1})
    (out / "genai_config.json").write_text(json.dumps(config))
    return out


def generator_ceiling(folder: Path, batch: int, ids: list[list[int]]) -> float:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    total = PROMPT_TOKENS + MAX_TOKENS
    params.set_search_options(max_length=total, min_length=total, batch_size=batch, do_sample=False)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(np.asarray(ids[:batch], dtype=np.int32))
    steps = 0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
    return batch * MAX_TOKENS / (time.perf_counter() - start)


def engine_as_is(folder: Path, ids: list[list[int]]) -> Load:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    engine = og.Engine(model)
    buffer = engine.create_event_buffer(4096)
    start = time.perf_counter()
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    gaps: list[float] = []
    keys = {}
    for i, prompt in enumerate(ids):
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(MAX_TOKENS)
        options.set_min_generated_tokens(MAX_TOKENS)
        options.set_temperature(0.0)
        request.begin_turn(np.asarray(prompt, dtype=np.int32), options)
        keys[id(request)] = i
    tokens = 0
    while engine.has_pending_requests():
        events = engine.run(buffer)
        now = time.perf_counter()
        for event in events or []:
            if str(event.flags).endswith("TOKEN"):
                k = id(event.request)
                tokens += 1
                if k in last:
                    gaps.append(now - last[k])
                first.setdefault(k, now - start)
                last[k] = now
    wall = time.perf_counter() - start
    ttfts = list(first.values())
    return Load("onnxruntime-genai Engine (in process, all at once)", len(ids), tokens / wall, pct(ttfts, 50),
                pct(ttfts, 99), pct(gaps, 50), pct(gaps, 99), len(ids))


def scheduler_alone(bundle: Path, ids: list[list[int]]) -> Load:
    """Our scheduler in process, no HTTP: 32 sequences submitted at once (what the server adds on top)."""
    import threading

    from kubemaas_runtime.generation.engine import Decoder
    from kubemaas_runtime.generation.folder import read_genai_config
    from kubemaas_runtime.generation.metrics import GenerationMetrics
    from kubemaas_runtime.generation.sampling import SamplingParams
    from kubemaas_runtime.generation.scheduler import Delta, Scheduler
    from kubemaas_runtime.generation.tokenizer import TextTokenizer

    decoder = Decoder(bundle, read_genai_config(bundle), slots=32)
    decoder.warm_up()  # as the server does before it reports ready
    scheduler = Scheduler(decoder, TextTokenizer(bundle), GenerationMetrics("bench"), max_waiting=64)
    done = threading.Semaphore(0)
    first: list[float] = []

    def sink(delta: Delta) -> None:
        if delta.completion_tokens == 1:
            first.append(time.perf_counter() - start)
        if delta.finish_reason is not None:
            done.release()

    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    scheduler.start()
    start = time.perf_counter()
    for prompt in ids[:32]:
        scheduler.submit(scheduler.new_sequence(prompt, params, sink, frozenset()))
    for _ in range(32):
        done.acquire()
    wall = time.perf_counter() - start
    scheduler.stop()
    return Load("our scheduler in process, no HTTP (all at once)", 32, 32 * MAX_TOKENS / wall, pct(first, 50),
                pct(first, 99), float("nan"), float("nan"), 32)


def server_ttft_mean_ms(url: str) -> tuple[float, float]:
    """(sum, count) of the server's own kubemaas_time_to_first_token_seconds histogram."""
    import httpx

    text = httpx.get(f"{url}/metrics").text
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("kubemaas_time_to_first_token_seconds_")}
    return values.get("kubemaas_time_to_first_token_seconds_sum", 0.0), values.get(
        "kubemaas_time_to_first_token_seconds_count", 0.0)


async def stream_load(url: str, label: str, concurrency: int, ids: list[list[int]], rounds: int) -> Load:
    """Streaming clients on raw asyncio sockets (an HTTP library per chunk would make the client the bottleneck)."""
    import re

    host, port = url.removeprefix("http://").split(":")
    ttfts: list[float] = []
    gaps: list[float] = []
    tokens = 0
    usage = re.compile(rb'"completion_tokens":(\d+)')

    async def one(prompt: list[int]) -> None:
        nonlocal tokens
        body = json.dumps({"model": "textgen", "prompt": prompt_text[id(prompt)], "max_tokens": MAX_TOKENS,
                           "stream": True, "ignore_eos": True, "temperature": 0,
                           "stream_options": {"include_usage": True}}).encode()
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        previous = None
        seen = b""
        while chunk := await reader.read(65536):
            now = time.perf_counter()
            events = chunk.count(b'"text_completion"')
            if events and b'"choices":[]' not in chunk:
                if previous is None:
                    ttfts.append(now - start)
                else:
                    gaps.append(now - previous)
                previous = now
            seen = (seen + chunk)[-4096:]
        writer.close()
        found = usage.findall(seen)
        tokens += int(found[-1]) if found else 0

    async def worker(i: int) -> None:
        await asyncio.sleep(i * STAGGER_S)
        for r in range(rounds):
            await one(ids[(i * rounds + r) % len(ids)])

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - began
    return Load(label, concurrency, tokens / wall, pct(ttfts, 50), pct(ttfts, 99), pct(gaps, 50), pct(gaps, 99),
                concurrency * rounds)


prompt_text: dict[int, str] = {}


def start_server(argv: list[str], env: dict[str, str], ready_path: str, port: int) -> subprocess.Popen[bytes]:
    import urllib.request

    proc = subprocess.Popen(["taskset", "-c", str(SERVER_CORE), *argv], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv} not ready")


def kubemaas_loads(bundle: Path, ids: list[list[int]], rounds: int, switch_interval: str | None) -> list[Load]:
    from kubemaas_runtime.serving.process import free_port

    port = free_port()
    env = {"KUBEMAAS_MAX_BATCH_SIZE": "32", "KUBEMAAS_MAX_WAITING": "256", "KUBEMAAS_LOG_LEVEL": "warning"}
    if switch_interval:
        env["KUBEMAAS_SWITCH_INTERVAL_S"] = switch_interval
    argv = [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(bundle), "--host", "127.0.0.1",
            "--port", str(port)]
    proc = start_server(argv, env, "/v2/health/ready", port)
    try:
        url = f"http://127.0.0.1:{port}"
        tag = "" if switch_interval is None else f" (switch interval {switch_interval}s)"
        levels = (1, 8, 32) if switch_interval is None else (32,)
        asyncio.run(stream_load(url, "warm-up", 4, ids, 1))
        loads = []
        for c in levels:
            before = server_ttft_mean_ms(url)
            load = asyncio.run(stream_load(url, f"kubemaas serve{tag}", c, ids, rounds))
            after = server_ttft_mean_ms(url)
            load.server_ttft_mean_ms = 1000 * (after[0] - before[0]) / max(after[1] - before[1], 1.0)
            loads.append(load)
        return loads
    finally:
        proc.terminate()
        proc.wait(30)


def naive_load(checkpoint: Path, ids: list[list[int]], concurrency: int) -> Load:
    import httpx

    from kubemaas_runtime.serving.process import free_port

    port = free_port()
    proc = start_server([sys.executable, "-m", "bench.naive_textgen_server", str(checkpoint), str(port)], {}, "/ready",
                        port)
    try:
        async def run() -> Load:
            latencies: list[float] = []
            tokens = 0

            async def worker(i: int, client: httpx.AsyncClient) -> None:
                nonlocal tokens
                await asyncio.sleep(i * STAGGER_S)
                start = time.perf_counter()
                resp = await client.post(f"http://127.0.0.1:{port}/generate",
                                         json={"prompt_ids": ids[i % len(ids)], "max_tokens": MAX_TOKENS})
                tokens += resp.json()["tokens"]
                latencies.append(time.perf_counter() - start)  # no streaming: first token = whole answer

            async with httpx.AsyncClient(timeout=600) as client:
                began = time.perf_counter()
                await asyncio.gather(*(worker(i, client) for i in range(concurrency)))
                wall = time.perf_counter() - began
            return Load("transformers generate() in FastAPI, one at a time", concurrency, tokens / wall,
                        pct(latencies, 50), pct(latencies, 99), float("nan"), float("nan"), concurrency)

        return asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round per client instead of three")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix="kubemaas-bench-gen-") as tmp:
        work = Path(tmp)
        bundle = train(work / "bundle")
        compressed = work / "compressed"
        from kubemaas_runtime.compression.textgen import compress_textgen

        os.sched_setaffinity(0, {SERVER_CORE})
        report, _ = compress_textgen(bundle, compressed, mode="auto", max_perplexity_increase=0.02, runs=5,
                                     decode_tokens=128)
        os.sched_setaffinity(0, {LOAD_CORE})
        from kubemaas_runtime.generation.tokenizer import TextTokenizer

        tok = TextTokenizer(bundle)
        ids = prompts(bundle, 96)
        for p in ids:
            prompt_text[id(p)] = tok.decode(p)
        single = one_thread_copy(bundle, work / "one-thread")
        os.sched_setaffinity(0, {SERVER_CORE})
        ceiling = generator_ceiling(single, 32, ids)
        engine = engine_as_is(single, ids[:32])
        alone = scheduler_alone(single, ids)
        os.sched_setaffinity(0, {LOAD_CORE})
        ours = kubemaas_loads(bundle, ids, rounds, None)
        knob = kubemaas_loads(bundle, ids, rounds, "0.0005")
        naive = naive_load(hf_checkpoint(bundle, work / "hf"), ids, 8)
    rows = [*ours, *knob, alone, engine, naive]
    c1 = next(r for r in ours if r.concurrency == 1)
    c32 = next(r for r in ours if r.concurrency == 32)
    by = {m.name: m for m in report.variants}
    ratios = {
        "c32_vs_static_ceiling": c32.tokens_per_s / ceiling,
        "c32_vs_naive": c32.tokens_per_s / naive.tokens_per_s,
        "ttft_p50_c32_over_c1": c32.ttft_p50_ms / c1.ttft_p50_ms,
        "ttft_p99_over_p50_c32": c32.ttft_p99_ms / c32.ttft_p50_ms,
        "int4_vs_fp32_single_stream": by["int4"].tokens_per_second / by["fp32"].tokens_per_second,
        "int4_perplexity_increase": by["int4"].perplexity_increase,
    }
    lines = [
        f"Model: textgen recipe {MODEL_PARAMS}; prompt {PROMPT_TOKENS} tokens, {MAX_TOKENS} generated per request;",
        f"server on core {SERVER_CORE}, clients on core {LOAD_CORE}, arrivals {STAGGER_S * 1000:.0f} ms apart.",
        "",
        "| server | c | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | server TTFT mean ms |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r.label} | {r.concurrency} | {r.tokens_per_s:.0f} | {r.ttft_p50_ms:.1f} | {r.ttft_p99_ms:.1f} | "
          f"{r.itl_p50_ms:.2f} | {r.itl_p99_ms:.2f} | {r.server_ttft_mean_ms:.1f} |" for r in rows],
        f"| onnxruntime-genai Generator, fixed batch 32 (static ceiling) | 32 | {ceiling:.0f} | | | | | |",
        "",
        "| variant | size bytes | perplexity | increase | TTFT ms | tokens/s (batch 1) |",
        "|---|---|---|---|---|---|",
        *[f"| {m.name} | {m.size_bytes} | {m.perplexity:.2f} | {100 * m.perplexity_increase:+.2f}% | {m.ttft_ms:.2f} "
          f"| {m.tokens_per_second:.0f} |" for m in report.variants],
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
        f"| c=32 tokens/s / static ceiling | {ratios['c32_vs_static_ceiling']:.2f} | >= 0.8 |",
        f"| c=32 tokens/s / naive transformers server | {ratios['c32_vs_naive']:.1f} | >= 5 |",
        f"| TTFT p50 c=32 / c=1 | {ratios['ttft_p50_c32_over_c1']:.2f} | <= 5 |",
        f"| TTFT p99 / p50 at c=32 | {ratios['ttft_p99_over_p50_c32']:.2f} | <= 3 |",
        f"| int4 / fp32 single-stream tokens/s | {ratios['int4_vs_fp32_single_stream']:.2f} | >= 2 at <= 2% |",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generation.md").write_text(text + "\n")
    (RESULTS / "generation.json").write_text(json.dumps(
        {"rows": [r.__dict__ for r in rows], "ceiling": ceiling, "ratios": ratios,
         "variants": [m.__dict__ for m in report.variants]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
