"""`kubemaas demo`: both real lineages, digits (2 gloo ranks -> compress -> serve -> v2 requests) and text
generation (2 gloo ranks -> int4/int8 -> serve -> a streamed completion -> a load test), the second at a
tiny model size so the whole run takes about a minute."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubemaas_runtime import demo, demo_textgen
from kubemaas_runtime.demo_textgen import CompletionError, Request, StreamResult
from kubemaas_runtime.serving.process import ServeProcess

TINY_TEXTGEN = ["vocab=512", "hidden=64", "layers=2", "heads=4", "kv_heads=2", "ff=128", "context=256",
                "max_train_windows=256", "bf16=false"]
"""A language model that trains in seconds (the demo's default is the recipe's demo size)."""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One real ``kubemaas demo`` process; returns its stdout and work directory."""
    work = tmp_path_factory.mktemp("demo") / "work"
    sets = [arg for item in TINY_TEXTGEN for arg in ("--textgen-set", item)]
    proc = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "demo", "--workdir", str(work), "--epochs", "6",
         "--latency-requests", "20", *sets, "--textgen-epochs", "1", "--stream-tokens", "12",
         "--load-clients", "4", "--load-requests", "8", "--load-tokens", "16"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, work


@pytest.mark.slow
def test_demo_trains_compresses_serves_and_reports(demo_run: tuple[str, Path]) -> None:
    out, work = demo_run
    assert "[1/8] training 'digits' with 2 torch.distributed ranks" in out
    assert "epoch 6/6" in out
    served = next(line for line in out.splitlines() if line.startswith("held-out accuracy through the server"))
    accuracy = float(served.split(":")[1].split()[0])
    assert accuracy >= 0.93, served
    assert (work / "compressed" / "model.json").is_file()
    assert (work / "compressed" / "compression.json").is_file()
    assert (work / "logs" / "train" / "rank-1.log").is_file()


@pytest.mark.slow
def test_demo_trains_quantizes_serves_and_streams_a_language_model(demo_run: tuple[str, Path]) -> None:
    out, work = demo_run
    lines = out.splitlines()
    assert any(line.startswith("[5/8] training 'textgen'") and "with 2 torch.distributed ranks" in line
               for line in lines)
    assert "  epoch 1/1  train loss " in out
    assert "[8/8] streaming a completion through the openai client, token by token:" in lines
    streamed = lines[lines.index("[8/8] streaming a completion through the openai client, token by token:") + 1]
    assert streamed.startswith("The import statement")
    for variant in ("fp32", "int4", "int8"):
        assert any(line.startswith(f"| {variant} | ") and line.endswith(" pass |") for line in lines), variant
    assert re.search(r"streamed completion \(openai client\): \d+ tokens in \d+ chunks", out)
    load = next(line for line in lines if line.startswith("load test: "))
    assert load.startswith("load test: 4 concurrent streams, 8 requests x 16 tokens: "), load
    rate = re.search(r": (\d+) tokens/s aggregate, time to first token p50 ([\d.]+) ms", load)
    assert rate is not None, load
    assert float(rate.group(1)) > 0, load
    assert float(rate.group(2)) > 0, load
    assert (work / "textgen" / "compressed" / "compression.json").is_file()
    assert (work / "textgen" / "logs" / "train" / "rank-1.log").is_file()


@pytest.mark.slow
def test_both_clients_read_the_same_stream(demo_run: tuple[str, Path], tmp_path: Path) -> None:
    """The openai client and the plain-HTTP reader give the same text for the same seed on the demo's model."""
    _, work = demo_run
    with ServeProcess(work / "textgen" / "compressed", tmp_path / "serve.log") as server:
        model = demo_textgen.served_model(server.url)
        request = Request("A tuple is", 20, seed=7)
        seen: list[str] = []
        official = demo_textgen.make_streamer("openai", server.url, model).stream(request, on_text=seen.append)
        plain = demo_textgen.make_streamer("http", server.url, model).stream(request)
        load = demo_textgen.load_test(demo_textgen.HttpStreamer(server.url, model), ["Lists are"], clients=3,
                                      requests=5, max_tokens=9)
    assert official.text == plain.text == "".join(seen)
    assert official.completion_tokens == plain.completion_tokens
    assert official.chunks == len(seen)
    assert (load.completion_tokens, load.requests) == (5 * 9, 5)


@pytest.fixture
def no_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` now raises ImportError


def test_without_the_openai_package_auto_falls_back_to_plain_http(no_openai: None) -> None:
    streamer = demo_textgen.make_streamer("auto", "http://127.0.0.1:1", "m")
    assert streamer.name == "plain HTTP"
    with pytest.raises(ImportError):
        demo_textgen.make_streamer("openai", "http://127.0.0.1:1", "m")


def test_sse_events_stop_at_done_and_raise_on_an_error_event() -> None:
    lines = [b": keep-alive\n", b'data: {"choices": [{"text": "a"}]}\n', b"\n", b"data: [DONE]\n",
             b'data: {"choices": [{"text": "never"}]}\n']
    assert list(demo_textgen.sse_events(iter(lines))) == [{"choices": [{"text": "a"}]}]
    with pytest.raises(CompletionError, match="overloaded"):
        list(demo_textgen.sse_events(iter([b'data: {"error": {"message": "overloaded"}}\n'])))


class _Fixed:
    """A stand-in streamer (a real server cannot be made to return short counts under ``ignore_eos``)."""

    name = "fixed"

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def stream(self, request: Request, on_text: demo_textgen.TextSink | None = None) -> StreamResult:
        return StreamResult("x" * self.tokens, self.tokens, self.tokens, 0.010, 0.050, "length")


def test_load_test_adds_up_tokens_and_rejects_short_answers() -> None:
    result = demo_textgen.load_test(_Fixed(16), ["p"], clients=2, requests=6, max_tokens=16)
    assert result.completion_tokens == 6 * 16
    assert result.tokens_per_s == pytest.approx(96 / result.wall_s)
    assert result.ttft_p50_ms == pytest.approx(10.0)
    with pytest.raises(CompletionError, match="returned \\[15, 15\\] tokens, not 16"):
        demo_textgen.load_test(_Fixed(15), ["p"], clients=1, requests=2, max_tokens=16)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    return parser.parse_args(argv)


def test_flags_become_settings() -> None:
    settings = demo.settings_from_args(_args("--no-textgen", "--textgen-set", "hidden=64", "--textgen-set",
                                             "layers=2", "--load-clients", "3", "--client", "http"))
    assert (settings.textgen, settings.textgen_params, settings.load_clients, settings.client) == (
        False, {"hidden": "64", "layers": "2"}, 3, "http")


def test_a_malformed_textgen_set_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.run(_args("--textgen-set", "hidden")) == 2
    assert "--textgen-set 'hidden': expected KEY=VALUE" in capsys.readouterr().out


def test_report_lists_each_variant_and_the_selection() -> None:
    report = {
        "training": {"artifact": {"metrics": {"accuracy": 0.97, "epochs": 3}}},
        "compression": {"selected": "int8-static", "reason": "fastest", "variants": [
            {"name": "fp32", "sizeBytes": 2048, "p50Batch1Ms": 0.1, "p50Batch32Ms": 0.5,
             "accuracy": 0.97, "accuracyDrop": 0.0, "passed": True},
            {"name": "int8-static", "sizeBytes": 1024, "p50Batch1Ms": 0.1, "p50Batch32Ms": 0.3,
             "accuracy": 0.965, "accuracyDrop": 0.005, "passed": True},
        ]},
        "serving": {"name": "digits", "url": "http://127.0.0.1:1/v2/models/digits/infer", "served_accuracy": 0.965,
                    "eval_rows": 360, "samples": [{"label": 7, "predicted": 7}], "p50_ms": 0.9, "p99_ms": 2.0},
        "workdir": "/tmp/x", "seconds": 30.0,
    }
    text = demo.format_report(report)
    assert "| int8-static | 1.0 | 0.100 | 0.300 | 0.9650 | +0.0050 | pass |" in text
    assert "selected: int8-static (fastest)" in text
    assert "training metrics: accuracy=0.9700, epochs=3" in text
    assert "Text generation" not in text


def test_textgen_report_shows_perplexity_gate_stream_and_load() -> None:
    report = {
        "training": {"artifact": {"metrics": {"parameters": 1_380_000.0, "perplexity": 130.8,
                                              "unigramPerplexity": 556.3, "accuracy": 0.15}}},
        "compression": {"selected": "int8", "reason": "auto: fastest", "variants": [
            {"name": "fp32", "sizeBytes": 4096, "perplexity": 115.48, "perplexityIncrease": 0.0, "ttftMs": 0.77,
             "tokensPerSecond": 2911.0, "passed": True},
            {"name": "int4", "sizeBytes": 1024, "perplexity": 140.0, "perplexityIncrease": 0.2123, "ttftMs": 2.2,
             "tokensPerSecond": 3377.0, "passed": False},
        ]},
        "model": "textgen", "url": "http://127.0.0.1:1", "client": "openai client",
        "stream": {"text": "x", "completion_tokens": 48, "chunks": 23, "ttft_s": 0.0379, "total_s": 0.2,
                   "finish_reason": "length"},
        "load": {"clients": 8, "requests": 32, "max_tokens": 64, "completion_tokens": 2048, "wall_s": 0.7,
                 "tokens_per_s": 2875.4, "ttft_p50_ms": 13.1, "ttft_p99_ms": 57.4, "e2e_p50_ms": 170.2},
    }
    text = demo_textgen.format_textgen_report(report)
    assert "training: 1.38M parameters, held-out perplexity 130.8 (unigram baseline 556.3)" in text
    assert "| fp32 | 4.0 | 115.48 | +0.00% | 0.77 | 2911 | pass |" in text
    assert "| int4 | 1.0 | 140.00 | +21.23% | 2.20 | 3377 | FAIL |" in text
    assert "selected: int8 (auto: fastest)" in text
    assert "streamed completion (openai client): 48 tokens in 23 chunks, first after 37.9 ms" in text
    assert ("load test: 8 concurrent streams, 32 requests x 64 tokens: 2875 tokens/s aggregate, "
            "time to first token p50 13.1 ms (p99 57.4 ms), request p50 170 ms") in text
