"""The client side of the text-generation part of ``kubemaas demo``: streamed completions and a load test.

A completion is streamed from ``POST /v1/completions`` (``stream: true``, server-sent events ending in
``data: [DONE]``, ``stream_options.include_usage`` for the token count) either through the official
``openai`` client, when it is installed (``make demo`` installs it with the ``dev`` extra), or through
plain HTTP from the standard library; both read the same wire format, so the demo runs in a serving
image too. The load test is the usual LLM-serving one (vLLM's ``benchmark_serving``, GenAI-Perf):
``clients`` concurrent streams, each sending its share of ``requests`` back to back, ``ignore_eos``
so that every request yields exactly ``max_tokens`` tokens; aggregate tokens/s = all completion
tokens / wall time from the first send to the last ``[DONE]``, time to first token measured per
request on the client (send to first text chunk), as a user of the API sees it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

ClientKind = Literal["auto", "openai", "http"]
TextSink = Callable[[str], None]


class CompletionError(RuntimeError):
    """A completion request failed; the message carries the status and the server's error body."""


@dataclass(frozen=True)
class StreamResult:
    """One streamed completion as the client saw it.

    ``ttft_s``: seconds from sending the request to the first chunk that carries text;
    ``total_s``: seconds to the end of the stream; ``chunks``: text chunks received.
    """

    text: str
    completion_tokens: int
    chunks: int
    ttft_s: float
    total_s: float
    finish_reason: str | None


@dataclass(frozen=True)
class Request:
    """The sampling fields of one ``POST /v1/completions`` (OpenAI's names; ``ignore_eos`` is vLLM's)."""

    prompt: str
    max_tokens: int
    temperature: float = 0.6
    top_p: float = 0.9
    seed: int | None = 0
    ignore_eos: bool = False

    def body(self, model: str) -> dict[str, Any]:
        return {"model": model, "prompt": self.prompt, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "ignore_eos": self.ignore_eos, "stream": True, "stream_options": {"include_usage": True}}


class Streamer(Protocol):
    """Sends one streamed completion; calls ``on_text`` with each text chunk as it arrives."""

    name: str

    def stream(self, request: Request, on_text: TextSink | None = None) -> StreamResult: ...


class _Timer:
    """Collects chunks and stamps the first one that carries text."""

    def __init__(self, on_text: TextSink | None) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.parts: list[str] = []
        self.on_text = on_text

    def text(self, piece: str) -> None:
        if not piece:
            return
        if self.first is None:
            self.first = time.perf_counter()
        self.parts.append(piece)
        if self.on_text is not None:
            self.on_text(piece)

    def result(self, tokens: int | None, finish_reason: str | None) -> StreamResult:
        end = time.perf_counter()
        if tokens is None:
            raise CompletionError("the stream ended without a usage chunk (stream_options.include_usage)")
        first = self.first if self.first is not None else end
        return StreamResult("".join(self.parts), tokens, len(self.parts), first - self.start, end - self.start,
                            finish_reason)


class OpenAIStreamer:
    """Streams through the official ``openai`` client (raises ImportError when it is not installed)."""

    name = "openai client"

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0) -> None:
        from openai import OpenAI

        self.model = model
        self.client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=timeout_s)

    def stream(self, request: Request, on_text: TextSink | None = None) -> StreamResult:
        import openai

        timer = _Timer(on_text)
        tokens: int | None = None
        finish: str | None = None
        try:
            chunks = self.client.completions.create(
                model=self.model, prompt=request.prompt, max_tokens=request.max_tokens,
                temperature=request.temperature, top_p=request.top_p, seed=request.seed, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": request.ignore_eos},
            )
            for chunk in chunks:
                for choice in chunk.choices:
                    timer.text(choice.text)
                    finish = choice.finish_reason or finish
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
        except openai.APIError as exc:
            raise CompletionError(f"POST /v1/completions: {exc}") from exc
        return timer.result(tokens, finish)


class HttpStreamer:
    """Streams with ``urllib`` and parses the server-sent events itself (no extra dependency)."""

    name = "plain HTTP"

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0) -> None:
        self.url = f"{base_url}/v1/completions"
        self.model = model
        self.timeout_s = timeout_s

    def stream(self, request: Request, on_text: TextSink | None = None) -> StreamResult:
        timer = _Timer(on_text)
        tokens: int | None = None
        finish: str | None = None
        req = urllib.request.Request(self.url, data=json.dumps(request.body(self.model)).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                for event in sse_events(resp):
                    for choice in event.get("choices") or []:
                        timer.text(str(choice.get("text") or ""))
                        finish = choice.get("finish_reason") or finish
                    if event.get("usage"):
                        tokens = int(event["usage"]["completion_tokens"])
        except urllib.error.HTTPError as exc:
            raise CompletionError(f"POST {self.url} -> {exc.code}: {exc.read().decode(errors='replace')}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CompletionError(f"POST {self.url}: {exc}") from exc
        return timer.result(tokens, finish)


def sse_events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of ``data:`` lines up to ``data: [DONE]``; an ``error`` payload raises."""
    for raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        event = json.loads(data)
        if isinstance(event, dict) and "error" in event:
            raise CompletionError(f"the stream carried an error: {event['error']}")
        yield event


def make_streamer(kind: ClientKind, base_url: str, model: str) -> Streamer:
    """``openai`` when asked for (or, for ``auto``, when installed), else ``http``."""
    if kind in ("auto", "openai"):
        try:
            return OpenAIStreamer(base_url, model)
        except ImportError:
            if kind == "openai":
                raise
    return HttpStreamer(base_url, model)


def served_model(base_url: str) -> str:
    """The id ``GET /v1/models`` lists (a kubemaas server serves exactly one model)."""
    with urllib.request.urlopen(f"{base_url}/v1/models", timeout=10) as resp:
        return str(json.loads(resp.read())["data"][0]["id"])


@dataclass(frozen=True)
class LoadResult:
    """Aggregate of a load test: ``tokens_per_s`` over the wall time, TTFT percentiles in ms."""

    clients: int
    requests: int
    max_tokens: int
    completion_tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    e2e_p50_ms: float


def load_test(streamer: Streamer, prompts: list[str], *, clients: int, requests: int, max_tokens: int) -> LoadResult:
    """``requests`` streamed completions from ``clients`` threads, each request exactly ``max_tokens`` long.

    Request ``i`` uses ``prompts[i % len(prompts)]`` and seed ``i``. Raises ``CompletionError`` when a
    request fails or returns another token count than asked for.
    """
    if clients < 1 or requests < 1 or not prompts:
        raise ValueError(f"clients={clients} and requests={requests} must be >= 1, with at least one prompt")
    jobs = [Request(prompts[i % len(prompts)], max_tokens, seed=i, ignore_eos=True) for i in range(requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(streamer.stream, jobs))
    wall = time.perf_counter() - start
    wrong = [r.completion_tokens for r in results if r.completion_tokens != max_tokens]
    if wrong:
        raise CompletionError(f"{len(wrong)} of {requests} requests returned {wrong[:5]} tokens, not {max_tokens}")
    tokens = sum(r.completion_tokens for r in results)
    ttft = np.asarray([r.ttft_s for r in results]) * 1000.0
    e2e = np.asarray([r.total_s for r in results]) * 1000.0
    return LoadResult(clients, requests, max_tokens, tokens, wall, tokens / wall,
                      float(np.percentile(ttft, 50)), float(np.percentile(ttft, 99)), float(np.percentile(e2e, 50)))


def format_textgen_report(report: dict[str, Any]) -> str:
    """The text-generation section of the demo report (``report`` as ``run_textgen`` returns it)."""
    metrics = report["training"].get("artifact", {}).get("metrics", {})
    compression, stream, load = report["compression"], report["stream"], report["load"]
    lines = ["", "Text generation", "=" * 15]
    if metrics:
        lines.append(
            f"training: {metrics.get('parameters', 0) / 1e6:.2f}M parameters, held-out perplexity "
            f"{metrics.get('perplexity', float('nan')):.1f} (unigram baseline "
            f"{metrics.get('unigramPerplexity', float('nan')):.1f}), next-token accuracy "
            f"{metrics.get('accuracy', float('nan')):.4f}")
    lines.append("")
    lines.append("| variant | size (KB) | perplexity | increase | TTFT (ms) | tokens/s b1 | gate |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for v in compression.get("variants", []):
        lines.append(
            f"| {v.get('name')} | {v.get('sizeBytes', 0) / 1024:.1f} | {v.get('perplexity', 0):.2f} | "
            f"{100 * v.get('perplexityIncrease', 0):+.2f}% | {v.get('ttftMs', 0):.2f} | "
            f"{v.get('tokensPerSecond', 0):.0f} | {'pass' if v.get('passed') else 'FAIL'} |")
    lines.append(f"selected: {compression.get('selected')} ({compression.get('reason', '')})")
    lines.append("")
    lines.append(f"served model '{report['model']}' at {report['url']}/v1 (OpenAI-compatible)")
    lines.append(f"streamed completion ({report['client']}): {stream['completion_tokens']} tokens in "
                 f"{stream['chunks']} chunks, first after {1000 * stream['ttft_s']:.1f} ms, "
                 f"finish_reason {stream['finish_reason']}")
    lines.append(f"load test: {load['clients']} concurrent streams, {load['requests']} requests x "
                 f"{load['max_tokens']} tokens: {load['tokens_per_s']:.0f} tokens/s aggregate, "
                 f"time to first token p50 {load['ttft_p50_ms']:.1f} ms (p99 {load['ttft_p99_ms']:.1f} ms), "
                 f"request p50 {load['e2e_p50_ms']:.0f} ms")
    return "\n".join(lines) + "\n"
