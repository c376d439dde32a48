"""A fault the server did not foresee still answers in the protocol's error shape (OpenAI's on /v1,
v2's elsewhere), so clients parse it. The fault is injected (the tokenizer made to raise): no
valid request reaches one any more, which is the point."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kubemaas_runtime.generation.app import create_app
from kubemaas_runtime.generation.service import load_service
from kubemaas_runtime.generation.settings import GenerationSettings

pytestmark = pytest.mark.slow


def test_an_unforeseen_fault_is_a_500_in_the_protocols_error_shape(tiny_bundle: Path) -> None:
    service = load_service(GenerationSettings(model_dir=tiny_bundle, max_batch_size=1))

    def broken(text: str) -> list[int]:
        raise RuntimeError("injected")

    service.tokenizer.encode = broken  # type: ignore[method-assign]
    with TestClient(create_app(service), raise_server_exceptions=False) as http:
        openai = http.post("/v1/completions", json={"model": "textgen", "prompt": "x", "max_tokens": 1})
        v2 = http.post("/v2/models/textgen/generate", json={"text_input": "x"})
    assert (openai.status_code, openai.json()) == (500, {"error": {
        "message": "internal error: RuntimeError", "type": "server_error", "param": None, "code": None}})
    assert (v2.status_code, v2.json()) == (500, {"error": "internal error: RuntimeError"})
