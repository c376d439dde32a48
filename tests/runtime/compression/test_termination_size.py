"""The compression termination message under Kubernetes' 4096-byte limit when many students and
variants with long names are measured. It dropped variants from the END until it fit, so the selected
variant (often a late student) vanished from the message and the operator served it without its size;
its last resort cut the JSON mid-string. Now: always valid JSON, the selected variant and the bundle
kept whole, the others compacted then left out least-useful first, with the count in the message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubemaas_runtime import contracts
from kubemaas_runtime.compression.report import TERMINATION_LIMIT, encode_termination, termination_message
from kubemaas_runtime.compression.textgen import TextgenMeasurement, TextgenReport, termination
from tests.runtime.compression.reports import BUNDLE, long_name, tensor_report


def check(full: dict[str, Any]) -> dict[str, Any]:
    """Encode ``full`` and check every promise of ``encode_termination``; returns the decoded message."""
    text = encode_termination(full)
    assert len(text.encode()) < TERMINATION_LIMIT
    assert encode_termination(full) == text  # deterministic
    sent: dict[str, Any] = json.loads(text)
    names = [v["name"] for v in full["variants"]]
    kept = [v["name"] for v in sent["variants"]]
    assert (sent["selected"], sent["bundle"]) == (full["selected"], full["bundle"])
    assert kept == [n for n in names if n in kept]  # report order
    if full["selected"] is not None:
        chosen = next(v for v in full["variants"] if v["name"] == full["selected"])
        assert chosen in sent["variants"]  # whole, every key
    omitted = len(names) - len(kept)
    if omitted:
        assert (sent["variantsOmitted"], sent["variantsTotal"]) == (omitted, len(names))
        assert sent["reason"].endswith(contracts.omitted_variants_note(omitted, len(names)))
    return sent


@pytest.mark.parametrize("count", [20, 40, 150])
@pytest.mark.parametrize("name_length", [24, 120, 250])
@pytest.mark.parametrize("selected", ["first", "last", None])
def test_the_selected_variant_and_the_bundle_survive_any_number_of_long_names(
        count: int, name_length: int, selected: str | None) -> None:
    index = {"first": 0, "last": count - 1 if count % 2 else count - 2, None: None}[selected]
    full = termination_message(tensor_report(count, name_length, index), BUNDLE, "a" * 64, size_bytes=123456)
    assert len(json.dumps(full).encode()) > TERMINATION_LIMIT  # the case under test

    sent = check(full)

    kept = {v["name"] for v in sent["variants"]}
    passed = [v["name"] for v in full["variants"] if v["passed"]]
    failed_kept = [v for v in sent["variants"] if not v["passed"]]
    if failed_kept:  # a failed variant is kept only when every passing one is
        assert set(passed) <= kept
    if index is None and sent["variants"]:  # the gate's best candidates are what is kept
        best = min(full["variants"], key=lambda v: v["accuracyDrop"])
        assert best["name"] in kept


def test_text_generation_variants_shrink_alike() -> None:
    rows = [TextgenMeasurement(long_name(i, 200), 10**6 + i, 12.0 + i, i / 100, 5.0, 300.0 - i, i / 100 <= 0.05)
            for i in range(30)]
    report = TextgenReport("0" * 64, "text-generation", "auto", 0.05, 4096, 32, 64, rows, rows[3].name, "auto: x")
    sent = check(termination(report, BUNDLE, "a" * 64, size_bytes=10**7))
    assert [v["name"] for v in sent["variants"]][:6] == [r.name for r in rows[:6]]  # all that passed, first


def test_a_kilobytes_long_uri_still_gives_valid_json() -> None:
    full = termination_message(tensor_report(5, 24, 0), "s3://bucket/" + "p" * 5000, "a" * 64)
    sent = json.loads(encode_termination(full))
    assert (sent["selected"], sent["bundle"], sent["variants"]) == (None, None, [])
    assert "compression.json" in sent["reason"]
