"""Compression of text-generation bundles: weight-only int4/int8 MatMuls, gated by perplexity.

Each variant replaces every MatMul weight of the decoder by blockwise-quantized integers
(ONNX Runtime's ``MatMulNBits`` contrib op via ``MatMulNBitsQuantizer``, symmetric, block 32,
``accuracy_level`` 4 = int8 activations in the kernel); activations, the KV cache and the
embedding stay float. Each is measured like every variant: size on disk, held-out perplexity
(``generation.evalText``, the recipe's ``eval.txt``), and single-stream speed through the same
``Decoder`` the server uses: time to first token for a fixed prompt and decode tokens/s.

Policy (``mode``): ``auto`` ships the fastest variant whose perplexity increase over fp32
(``ppl / ppl_fp32 - 1``) is within ``max_perplexity_increase``; ``int4``/``int8`` ship that
variant if it passes the gate; ``none`` ships fp32. Output: the input folder with the chosen
decoder in place of ``model.onnx``, ``variants/<name>/`` for each variant, ``compression.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kubemaas_runtime.bundle import MANIFEST, Bundle, BundleError, fetch_bytes, load_bundle
from kubemaas_runtime.generation.engine import Decoder
from kubemaas_runtime.generation.folder import read_genai_config
from kubemaas_runtime.generation.tokenizer import TextTokenizer
from kubemaas_runtime.storage.uris import is_archive

log = logging.getLogger(__name__)

TextgenMode = Literal["auto", "int4", "int8", "none"]
TEXTGEN_MODES: tuple[TextgenMode, ...] = ("auto", "int4", "int8", "none")
REPORT = "compression.json"
VARIANTS_DIR = "variants"
BITS = {"int4": 4, "int8": 8}


@dataclass(frozen=True)
class TextgenMeasurement:
    """One variant: bytes of its decoder files, held-out perplexity, speed at batch 1."""

    name: str
    size_bytes: int
    perplexity: float
    perplexity_increase: float
    ttft_ms: float
    """Prefill of a ``prompt_tokens``-token prompt plus sampling of the first token (median of runs)."""
    tokens_per_second: float
    """Greedy decode at batch 1 after the prompt (median over runs)."""
    passed: bool


@dataclass(frozen=True)
class TextgenReport:
    source_bundle: str
    task: str
    mode: str
    max_perplexity_increase: float
    eval_tokens: int
    prompt_tokens: int
    decode_tokens: int
    variants: list[TextgenMeasurement]
    selected: str | None
    reason: str

    def dump(self) -> dict[str, object]:
        return asdict(self)


def quantize(source: Path, target: Path, bits: int, block_size: int = 32) -> None:
    """Write ``source`` (the decoder ONNX with its external data) with MatMulNBits weights to ``target``."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(quantizer.model.model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=target.name + ".data", size_threshold=1024)


def decoder_files(directory: Path, filename: str) -> list[Path]:
    """The decoder and its external-data file(s), as the builder and ``quantize`` name them."""
    return [p for p in (directory / filename, directory / f"{filename}.data") if p.is_file()]


def perplexity(decoder: Decoder, ids: np.ndarray, window: int) -> float:
    """exp(mean next-token NLL) over non-overlapping ``window``-token windows of ``ids``."""
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start : start + window + 1]
        if len(chunk) < 2:
            break
        logits = decoder.score(chunk[:-1].tolist()).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
    return math.exp(nll / max(count, 1))


def speed(decoder: Decoder, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(time to first token in ms, decode tokens/s) of one greedy generation at batch 1."""
    start = time.perf_counter()
    token = int(np.argmax(decoder.prefill(0, prompt)))
    first = time.perf_counter()
    length = len(prompt)
    for _ in range(tokens):
        token = int(np.argmax(decoder.decode([token], [length])[0]))
        length += 1
    return (first - start) * 1000, tokens / (time.perf_counter() - first)


def compress_textgen(
    bundle_dir: Path,
    out_dir: Path,
    *,
    mode: TextgenMode = "auto",
    max_perplexity_increase: float = 0.05,
    eval_tokens: int = 4096,
    prompt_tokens: int = 32,
    decode_tokens: int = 64,
    runs: int = 3,
    threads: int = 1,
) -> tuple[TextgenReport, Bundle | None]:
    """Build, measure and select; returns the report and the output bundle (None when nothing passes).

    Raises ``ValueError`` for a ``max_perplexity_increase`` that is not a finite fraction >= 0 (a
    negative or NaN gate would refuse even fp32), ``BundleError`` for a bundle that is not text generation.
    """
    if not (math.isfinite(max_perplexity_increase) and max_perplexity_increase >= 0):
        raise ValueError(f"--max-perplexity-increase (maxPerplexityIncrease) must be a finite fraction >= 0, "
                         f"e.g. 0.05 for +5%; got {max_perplexity_increase}")
    source = load_bundle(bundle_dir)
    spec = source.manifest.generation
    if spec is None:
        raise BundleError(f"{bundle_dir}: not a text-generation bundle")
    if spec.eval_text is None:
        raise BundleError(f"{bundle_dir / MANIFEST}: generation.evalText is not set; the perplexity gate needs it")
    shape = read_genai_config(source.path)
    tokenizer = TextTokenizer(source.path)
    ids = np.asarray(tokenizer.encode((source.path / spec.eval_text).read_text())[:eval_tokens], dtype=np.int64)
    window = min(256, shape.context_length - 1)
    prompt = ids[:prompt_tokens].tolist()
    decode_tokens = min(decode_tokens, shape.context_length - len(prompt) - 1)

    if out_dir.resolve() != source.path.resolve():
        shutil.copytree(source.path, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(VARIANTS_DIR))
    shutil.rmtree(out_dir / VARIANTS_DIR, ignore_errors=True)
    names: list[str] = ["fp32"] + ([] if mode == "none" else (["int4", "int8"] if mode == "auto" else [mode]))
    folders = {"fp32": source.path}
    for name in names[1:]:
        folder = out_dir / VARIANTS_DIR / name
        quantize(source.path / shape.filename, folder / shape.filename, BITS[name])
        folders[name] = folder

    decoders = {name: Decoder(folders[name], shape, slots=1, intra_op_threads=threads) for name in names}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:
        speed(decoders[name], prompt, 4)  # warm-up
    for _ in range(runs):  # round by round, so load changes on the machine hit every variant alike
        for name in names:
            timings[name].append(speed(decoders[name], prompt, decode_tokens))
    results: list[TextgenMeasurement] = []
    baseline = 0.0
    for name in names:
        ppl = perplexity(decoders[name], ids, window)
        baseline = baseline or ppl
        ttft = float(np.median([t for t, _ in timings[name]]))
        rate = float(np.median([r for _, r in timings[name]]))
        increase = ppl / baseline - 1.0
        size = sum(p.stat().st_size for p in decoder_files(folders[name], shape.filename))
        results.append(TextgenMeasurement(name, size, ppl, increase, ttft, rate, increase <= max_perplexity_increase))
        log.info("%s: %d bytes, perplexity %.3f (%+.2f%%), ttft %.2f ms, %.0f tokens/s",
                 name, size, ppl, 100 * increase, ttft, rate)

    selected, reason = _select(results, mode, max_perplexity_increase)
    report = TextgenReport(source.digest, "text-generation", mode, max_perplexity_increase, len(ids), len(prompt),
                           decode_tokens, results, selected, reason)
    (out_dir / REPORT).write_text(json.dumps(report.dump(), indent=2) + "\n")
    if selected is None:
        return report, None
    if selected != "fp32":
        for old in decoder_files(out_dir, shape.filename):
            old.unlink()
        for new in decoder_files(folders[selected], shape.filename):
            shutil.copyfile(new, out_dir / new.name)
    chosen = next(m for m in results if m.name == selected)
    metrics = {**source.manifest.metrics, "perplexity": chosen.perplexity,
               "perplexityIncrease": chosen.perplexity_increase, "tokensPerSecond": chosen.tokens_per_second,
               "ttftMs": chosen.ttft_ms, "sizeBytes": float(chosen.size_bytes)}
    from kubemaas_runtime.generation.folder import describe_folder

    bundle = describe_folder(out_dir, source.manifest.name, source=source.manifest.source, metrics=metrics,
                             eval_text=spec.eval_text, variant=selected)
    return report, bundle


def _select(results: list[TextgenMeasurement], mode: str, gate: float) -> tuple[str | None, str]:
    if mode == "none":
        return "fp32", "mode none ships the fp32 model"
    if mode in BITS:
        chosen = next(m for m in results if m.name == mode)
        if chosen.passed:
            return mode, f"mode {mode}: perplexity +{100 * chosen.perplexity_increase:.2f}% within {100 * gate:.2f}%"
        return None, (f"mode {mode}: perplexity +{100 * chosen.perplexity_increase:.2f}% exceeds "
                      f"maxPerplexityIncrease {100 * gate:.2f}%")
    passing = [m for m in results if m.passed]
    best = max(passing, key=lambda m: m.tokens_per_second)
    return best.name, (f"auto: fastest within +{100 * gate:.2f}% perplexity: {best.name} at "
                       f"{best.tokens_per_second:.0f} tokens/s (perplexity +{100 * best.perplexity_increase:.2f}%)")


def termination(
    report: TextgenReport | None, uri: str | None, digest: str | None, reason: str = "", *, size_bytes: int | None = None,
) -> dict[str, object]:
    """The compress termination message (same keys as tensor bundles; perplexity and speed per variant)."""
    from kubemaas_runtime.compression.report import bundle_ref

    variants = [
        {"name": m.name, "sizeBytes": m.size_bytes, "perplexity": round(m.perplexity, 6),
         "perplexityIncrease": round(m.perplexity_increase, 6), "tokensPerSecond": round(m.tokens_per_second, 1),
         "ttftMs": round(m.ttft_ms, 3), "passed": m.passed}
        for m in (report.variants if report else [])
    ]
    selected = report.selected if report else None
    return {"selected": selected, "reason": report.reason if report else reason,
            "bundle": bundle_ref(uri, digest, size_bytes) if selected and uri and digest else None,
            "variants": variants}


def table(report: TextgenReport) -> str:
    rows = ["variant  size_bytes  perplexity  increase  ttft_ms  tokens/s  passed"]
    rows += [f"{m.name:<8} {m.size_bytes:>10}  {m.perplexity:>10.3f}  {100 * m.perplexity_increase:>+7.2f}%  "
             f"{m.ttft_ms:>7.2f}  {m.tokens_per_second:>8.0f}  {m.passed}" for m in report.variants]
    return "\n".join(rows)


def is_text_generation(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / MANIFEST).read_text()).get("task") == "text-generation")
    except (OSError, ValueError, AttributeError):
        return False


def maybe_run(args: object) -> int | None:
    """``kubemaas compress`` for text generation, or None to let the tensor pipeline run.

    Taken when the local ``--bundle`` is a text-generation bundle, or (for a storage URI, whose
    task is unknown before fetching) when ``--mode`` is int4/int8 or ``--max-perplexity-increase``
    is given. Exit codes as for tensors: 0 selected, 1 nothing met the gate, 2 bad input.
    """
    import sys
    import tempfile

    from kubemaas_runtime.compression.report import encode_termination
    from kubemaas_runtime.compression.settings import CompressSettings

    bundle, output = str(getattr(args, "bundle")), str(getattr(args, "output"))  # noqa: B009
    mode = getattr(args, "mode", None) or "auto"
    gate = getattr(args, "max_perplexity_increase", None)
    remote = "://" in bundle or is_archive(bundle)
    if not (is_text_generation(Path(bundle)) if not remote else (mode in BITS or gate is not None)):
        return None
    if mode not in TEXTGEN_MODES:
        sys.stderr.write(f"kubemaas compress: --mode {mode!r}: text-generation bundles take {list(TEXTGEN_MODES)}\n")
        return 2
    termination_log = CompressSettings().termination_log

    def write(message: dict[str, object]) -> None:
        if termination_log.parent.is_dir():
            with contextlib.suppress(OSError):
                termination_log.write_text(encode_termination(message))

    with tempfile.TemporaryDirectory(prefix="kubemaas-compress-textgen-") as scratch:
        try:
            bundle_dir = Path(bundle)
            if remote:
                from kubemaas_runtime.storage import fetch

                bundle_dir = fetch(bundle, Path(scratch) / "input").path
            out_dir = Path(scratch) / "output" if "://" in output or is_archive(output) else Path(output)
            report, result = compress_textgen(
                bundle_dir, out_dir, mode=mode, max_perplexity_increase=0.05 if gate is None else float(gate),
                threads=getattr(args, "threads", None) or 1,
            )
            size = fetch_bytes(result) if result is not None else None
            uri = output
            if result is not None and ("://" in output or is_archive(output)):
                from kubemaas_runtime.storage import upload

                uri = upload(out_dir, output)
        except (BundleError, ValueError, OSError) as exc:
            sys.stderr.write(f"kubemaas compress: {exc}\n")
            write(termination(None, None, None, reason=str(exc)))
            return 2
    sys.stdout.write(table(report) + "\n")
    write(termination(report, uri, result.digest if result else None, size_bytes=size))
    if result is None:
        sys.stderr.write(f"kubemaas compress: no variant meets the gate: {report.reason}\n")
        return 1
    sys.stdout.write(f"selected {report.selected}: {report.reason}\nbundle {uri} sha256 {result.digest}\n")
    return 0
