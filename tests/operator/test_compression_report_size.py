"""The operator reads a compression termination message that had to leave variants out (many
students with long names): it serves the selected variant with its measured size, and the Compressed
condition says how many variants are only in compression.json, the same on every later sync."""

from __future__ import annotations

import json

from kubemaas_operator.controllers.modelservice import compress
from kubemaas_operator.controllers.modelservice import compression as jobs
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_runtime import contracts
from kubemaas_runtime.compression.report import TERMINATION_LIMIT, encode_termination, termination_message
from tests.runtime.compression.reports import BUNDLE, long_name, tensor_report

SOURCE = ServingBundle(uri="pvc://m/x", sha256="a" * 64, source=("TrainingJob", "ml", "train"))
BASE = {"job": "digits-compress-12345678", "mode": "auto", "maxAccuracyDrop": 0.01, "sourceSha256": "a" * 64}


def test_the_selected_variant_of_a_shortened_report_is_served_with_its_size() -> None:
    full = termination_message(tensor_report(60, 200, 58), BUNDLE, "b" * 64, size_bytes=123456)
    message = encode_termination(full)
    assert len(json.dumps(full)) > TERMINATION_LIMIT > len(message.encode())
    omitted = json.loads(message)["variantsOmitted"]

    result = compress.judge_report(BASE, "Succeeded", message, SOURCE, 0.01)

    assert result.serving is not None
    assert (result.serving.variant, result.serving.size_bytes, result.serving.bundle_bytes) == (
        full["selected"], 1000 + 58, 123456)
    note = contracts.omitted_variants_note(omitted, 60)
    assert result.condition.reason == "VariantSelected"
    assert result.condition.message.endswith(note)
    assert result.status is not None
    assert compress.from_status(result.status, SOURCE, 0.01).condition == result.condition


def test_a_failed_gate_in_a_shortened_report_names_the_best_drop_and_the_count() -> None:
    full = termination_message(tensor_report(60, 200, None, any_passed=False), BUNDLE, "b" * 64)
    message = encode_termination(full)
    omitted = json.loads(message)["variantsOmitted"]

    result = compress.judge_report(BASE, "Failed", message, SOURCE, 0.01)

    assert (result.condition.reason, result.failed) == ("AccuracyGateFailed", True)
    assert result.condition.message.startswith("no variant within maxAccuracyDrop 0.01: student-000-")
    assert result.condition.message.endswith(contracts.omitted_variants_note(omitted, 60))
    assert result.status is not None
    assert compress.from_status(result.status, SOURCE, 0.01).condition.message == result.condition.message
    best = long_name(0, 200)  # the best of all 60: drop 0.02 + i/10000
    assert jobs.gate_reason(result.status) == f"AccuracyGateFailed: best drop 2pt ({best}) > 1pt"
