"""Requests a newcomer sends with the official ``openai`` client that the server must answer
correctly or refuse by name, on a real ``kubemaas serve`` process serving a model trained in this
session: negative seeds, ``models.retrieve``, fields that ask for something not implemented, and
the v2 generate extension's ``stop``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kubemaas_runtime.generation.sampling import SEED_MAX, generator
from kubemaas_runtime.generation.tokenizer import TextTokenizer
from kubemaas_runtime.serving.process import ServeProcess

pytestmark = pytest.mark.slow
EXACT = {"ignore_eos": True}


def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_negative_seed_reproduces_like_any_seed(server: ServeProcess) -> None:
    c = client(server)
    texts = [c.completions.create(model="textgen", prompt="Lists are", max_tokens=12, seed=-1,
                                  extra_body=EXACT).choices[0].text for _ in range(2)]
    assert texts[0] == texts[1]


def test_a_seed_outside_64_bits_is_a_400_naming_seed(server: ServeProcess) -> None:
    resp = httpx.post(f"{server.url}/v1/completions",
                      json={"model": "textgen", "prompt": "x", "max_tokens": 2, "seed": -(2**63) - 1})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "seed"


def test_negative_seeds_are_read_as_their_unsigned_bits() -> None:
    assert generator(-1).integers(1 << 30, size=4).tolist() == generator(SEED_MAX).integers(1 << 30, size=4).tolist()


def test_models_retrieve_returns_the_served_model(server: ServeProcess) -> None:
    model = client(server).models.retrieve("textgen")
    assert (model.id, model.object, model.owned_by) == ("textgen", "model", "kubemaas")
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-5")


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [
        ("completions", "echo", True),
        ("completions", "logprobs", 2),
        ("completions", "best_of", 3),
        ("completions", "suffix", "end"),
        ("completions", "presence_penalty", 1.5),
        ("completions", "frequency_penalty", -0.5),
        ("completions", "logit_bias", {"50": 100}),
        ("chat/completions", "logprobs", True),
        ("chat/completions", "top_logprobs", 3),
        ("chat/completions", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("chat/completions", "tool_choice", "required"),
        ("chat/completions", "response_format", {"type": "json_object"}),
    ],
)
def test_a_field_that_asks_for_something_not_implemented_is_refused_by_name(
        server: ServeProcess, endpoint: str, field: str, value: object) -> None:
    body: dict[str, object] = {"model": "textgen", "max_tokens": 2, field: value}
    body.update({"prompt": "x"} if endpoint == "completions" else {"messages": [{"role": "user", "content": "x"}]})
    resp = httpx.post(f"{server.url}/v1/{endpoint}", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == field
    assert field in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("presence_penalty", 0), ("logprobs", False), ("response_format", {"type": "text"}), ("tool_choice", "none"),
     ("user", "alice"), ("best_of", 1)],
)
def test_fields_at_their_off_value_are_accepted(server: ServeProcess, field: str, value: object) -> None:
    body = {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, field: value}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code == 200


def test_v2_generate_takes_one_stop_string_and_refuses_an_empty_one(server: ServeProcess) -> None:
    url = f"{server.url}/v2/models/textgen/generate"
    one = httpx.post(url, json={"text_input": "Dicts", "parameters": {"max_tokens": 4, "stop": "\x00"}})
    assert one.status_code == 200
    assert one.json()["completion_tokens"] == 4
    empty = httpx.post(url, json={"text_input": "Dicts", "parameters": {"max_tokens": 4, "stop": [""]}})
    assert empty.status_code == 400
    assert "parameters.stop" in empty.json()["error"]


def test_with_include_usage_every_chunk_but_the_last_has_usage_null(server: ServeProcess) -> None:
    body = {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_stream_options_without_stream_is_a_400_naming_it(server: ServeProcess) -> None:
    body = {"model": "textgen", "prompt": "x", "max_tokens": 2, "stream_options": {"include_usage": True}}
    resp = httpx.post(f"{server.url}/v1/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "stream_options"


def test_no_waiting_places_still_serves_a_request_that_finds_a_free_slot(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"KUBEMAAS_MAX_BATCH_SIZE": "1", "KUBEMAAS_MAX_WAITING": "0"}
    with ServeProcess(tiny_bundle, tmp_path / "log", env=env) as proc:  # every request got 503 before
        resp = httpx.post(f"{proc.url}/v1/completions", json={"model": "textgen", "prompt": "x", "max_tokens": 2})
        assert resp.status_code == 200


def test_a_chunked_body_over_the_limit_is_a_413(tiny_bundle: Path, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit must hold while the body is read
        yield b'{"model": "textgen", "max_tokens": 1, "prompt": "'
        for _ in range(8):
            yield b"a" * 4096
        yield b'"}'

    with ServeProcess(tiny_bundle, tmp_path / "log", env={"KUBEMAAS_MAX_BODY_BYTES": "16384"}) as proc:
        resp = httpx.post(f"{proc.url}/v1/completions", content=chunks())
        assert resp.status_code == 413
        assert resp.json()["error"]["message"] == "request body exceeds max_body_bytes=16384"


def test_a_prompt_too_long_for_any_tokenization_is_refused_before_tokenizing(server: ServeProcess) -> None:
    resp = httpx.post(f"{server.url}/v1/completions", json={"model": "textgen", "prompt": "a" * 2_000_000})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == ("prompt", "context_length_exceeded")
    assert "your prompt has 2000000 characters, more than 1024 tokens" in error["message"]


def _raw(url: str, *pieces: bytes) -> bytes:
    """Send ``pieces`` on a fresh connection (each its own read on the server) and return what comes
    back before the server closes it."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_request_heads_and_bodies_are_bounded_as_in_tensor_serving(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"KUBEMAAS_HEADER_TIMEOUT_S": "1", "KUBEMAAS_BODY_TIMEOUT_S": "1", "KUBEMAAS_MAX_HEADER_BYTES": "8192"}
    with ServeProcess(tiny_bundle, tmp_path / "log", env=env) as proc:
        big = _raw(proc.url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000, b"a" * 6000)
        assert big.startswith(b"HTTP/1.1 431 ")
        slow_head = _raw(proc.url, b"GET /v1/models HTTP/1.1\r\n")  # and nothing more
        assert slow_head.startswith(b"HTTP/1.1 408 ")
        slow_body = _raw(proc.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert slow_body.startswith(b"HTTP/1.1 408 ")
        assert b"body_timeout_s=1" in slow_body


def test_the_body_timeout_never_cuts_a_generation_that_outlasts_it(tiny_bundle: Path, tmp_path: Path) -> None:
    with ServeProcess(tiny_bundle, tmp_path / "log", env={"KUBEMAAS_BODY_TIMEOUT_S": "0.1"}) as proc:
        c = client(proc)  # 1000 tokens take longer than 0.1 s; only the body's arrival is timed
        whole = c.completions.create(model="textgen", prompt="x", max_tokens=1000, extra_body=EXACT)
        assert whole.usage is not None
        assert whole.usage.completion_tokens == 1000
        chunks = list(c.completions.create(model="textgen", prompt="x", max_tokens=1000, stream=True,
                                           stream_options={"include_usage": True}, extra_body=EXACT))
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 1000


@pytest.mark.parametrize("wrap", [False, True])
def test_a_prompt_of_token_ids_is_served_like_its_text(server: ServeProcess, tiny_bundle: Path, wrap: bool) -> None:
    ids = TextTokenizer(tiny_bundle).encode("Lists are")
    c = client(server)
    by_text = c.completions.create(model="textgen", prompt="Lists are", max_tokens=6, temperature=0, extra_body=EXACT)
    by_ids = c.completions.create(model="textgen", prompt=[ids] if wrap else ids, max_tokens=6, temperature=0,
                                  extra_body=EXACT)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage is not None
    assert by_ids.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("bad", [512, -1])
def test_a_token_id_outside_the_vocabulary_is_a_400_naming_it(server: ServeProcess, bad: int) -> None:
    resp = httpx.post(f"{server.url}/v1/completions", json={"model": "textgen", "prompt": [1, bad], "max_tokens": 1})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "prompt"
    assert f"token id {bad} is outside this model's vocabulary [0, 512)" in resp.json()["error"]["message"]
