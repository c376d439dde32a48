"""The OpenAI-compatible server, as the official ``openai`` client and raw HTTP see it, on a real
``kubemaas serve`` process serving a model trained in this session."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from kubemaas_runtime.generation.tokenizer import TextTokenizer
from kubemaas_runtime.serving.process import ServeProcess
from tests.runtime.generation.conftest import metric

pytestmark = pytest.mark.slow
EXACT = {"ignore_eos": True}
"""vLLM's extension: exactly max_tokens tokens, so counts do not depend on what the tiny model says."""


def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(server: ServeProcess) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["textgen"]


def test_completion_counts_prompt_and_output_tokens(server: ServeProcess, tiny_bundle: Path) -> None:
    prompt = "The import statement"
    out = client(server).completions.create(model="textgen", prompt=prompt, max_tokens=7, temperature=0,
                                            extra_body=EXACT)
    tokens = TextTokenizer(tiny_bundle).encode(prompt)
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(tokens), 7)
    assert out.choices[0].finish_reason == "length"


def test_a_stream_carries_the_same_text_as_the_whole_answer(server: ServeProcess) -> None:
    c = client(server)
    whole = c.completions.create(model="textgen", prompt="Lists are", max_tokens=24, temperature=0, extra_body=EXACT)
    chunks = list(c.completions.create(model="textgen", prompt="Lists are", max_tokens=24, temperature=0,
                                       stream=True, stream_options={"include_usage": True}, extra_body=EXACT))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24


def test_chat_uses_the_bundles_template(server: ServeProcess, tiny_bundle: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a tuple?"}]
    out = client(server).chat.completions.create(model="textgen", messages=messages, max_tokens=5,  # type: ignore[arg-type]
                                                 temperature=0, extra_body=EXACT)
    tok = TextTokenizer(tiny_bundle)
    rendered = tok.render_chat(messages)
    assert rendered == "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is a tuple?<|end|>\n<|assistant|>\n"
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(tok.encode(rendered))
    assert out.choices[0].message.role == "assistant"


def test_chat_streams_a_role_then_content(server: ServeProcess) -> None:
    chunks = list(client(server).chat.completions.create(
        model="textgen", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True, extra_body=EXACT))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_generation_ends_before_a_stop_string(server: ServeProcess) -> None:
    c = client(server)
    free = c.completions.create(model="textgen", prompt="The for", max_tokens=30, temperature=0,
                                extra_body=EXACT).choices[0].text
    stop = free[6:9]
    assert stop.strip(), f"pick another slice of {free!r}"
    out = c.completions.create(model="textgen", prompt="The for", max_tokens=30, temperature=0, stop=[stop],
                               extra_body=EXACT)
    assert out.choices[0].text == free[: free.index(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_a_fixed_seed_reproduces_the_text(server: ServeProcess) -> None:
    c = client(server)

    def sample(seed: int) -> str:
        return c.completions.create(model="textgen", prompt="A class", max_tokens=20, temperature=1.0, seed=seed,
                                    extra_body=EXACT).choices[0].text

    first = sample(7)
    assert sample(7) == first
    assert any(sample(s) != first for s in (8, 9, 10))


def test_eight_concurrent_streams_complete_with_their_token_counts(server: ServeProcess) -> None:
    c = client(server)

    def stream(i: int) -> tuple[int, int]:
        chunks = list(c.completions.create(model="textgen", prompt=f"Topic {i}:", max_tokens=20 + i, stream=True,
                                           stream_options={"include_usage": True}, extra_body=EXACT))
        usage = chunks[-1].usage
        assert usage is not None
        return i, usage.completion_tokens

    with ThreadPoolExecutor(8) as pool:
        results = dict(pool.map(stream, range(8)))
    assert results == {i: 20 + i for i in range(8)}


def test_a_short_request_finishes_while_a_long_one_streams(server: ServeProcess) -> None:
    """The short one joined the running batch instead of waiting for the long one to end."""
    c = client(server)
    long_done = threading.Event()
    started = threading.Event()

    def long() -> None:
        for i, _ in enumerate(c.completions.create(model="textgen", prompt="Long", max_tokens=1000, stream=True,
                                                   extra_body=EXACT)):
            if i == 1:
                started.set()
        long_done.set()

    worker = threading.Thread(target=long)
    worker.start()
    assert started.wait(30)
    short = c.completions.create(model="textgen", prompt="Short", max_tokens=4, extra_body=EXACT)
    finished_first = not long_done.is_set()
    worker.join(60)
    assert short.usage is not None
    assert short.usage.completion_tokens == 4
    assert finished_first


def test_a_client_that_disconnects_stops_its_generation(server: ServeProcess) -> None:
    url = server.url
    before = httpx.get(f"{url}/metrics").text
    body = {"model": "textgen", "prompt": "Endless", "max_tokens": 1000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 20
    while metric(httpx.get(f"{url}/metrics").text, "kubemaas_num_requests_running") != 0:
        assert time.monotonic() < deadline, "the sequence is still running after its client left"
        time.sleep(0.02)
    settled = httpx.get(f"{url}/metrics").text
    generated = metric(settled, "kubemaas_generation_tokens_total") - metric(before, "kubemaas_generation_tokens_total")
    assert generated < 1000
    assert metric(settled, "kubemaas_request_aborted_total") == metric(before, "kubemaas_request_aborted_total") + 1
    time.sleep(0.2)  # nothing may run any more: the counter must not move
    assert metric(httpx.get(f"{url}/metrics").text, "kubemaas_generation_tokens_total") == metric(
        settled, "kubemaas_generation_tokens_total")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "prompt": "x"}, 404, "model"),
        ({"model": "textgen", "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
        ({"model": "textgen", "prompt": "x", "max_tokens": 2000}, 400, "max_tokens"),
        ({"model": "textgen", "prompt": "word " * 1100}, 400, "prompt"),
        ({"model": "textgen", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ({"model": "textgen", "prompt": 42}, 400, "prompt"),
        ({"model": "textgen", "prompt": "x", "n": 2}, 400, "n"),
        ({"prompt": "x"}, 400, "model"),
    ],
)
def test_bad_input_gets_an_openai_error(server: ServeProcess, body: dict[str, object], status: int, param: str) -> None:
    resp = httpx.post(f"{server.url}/v1/completions", json=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_the_openai_client_raises_its_own_error_types(server: ServeProcess) -> None:
    c = client(server)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-5", prompt="x")
    with pytest.raises(openai.BadRequestError, match="maximum context length is 1024"):
        c.completions.create(model="textgen", prompt="x", max_tokens=5000)


def test_v2_generate_and_generate_stream(server: ServeProcess) -> None:
    params = {"max_tokens": 6, "temperature": 0, "ignore_eos": True}
    whole = httpx.post(f"{server.url}/v2/models/textgen/generate", json={"text_input": "Dicts", "parameters": params})
    assert whole.status_code == 200
    assert whole.json()["model_name"] == "textgen"
    with httpx.stream("POST", f"{server.url}/v2/models/textgen/generate_stream",
                      json={"text_input": "Dicts", "parameters": params}) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    outputs = [json.loads(e[6:]) for e in events]
    assert [o["finish_reason"] for o in outputs][-1] == "length"
    assert outputs[-1]["completion_tokens"] == 6
    assert "".join(o["text_output"] for o in outputs) == whole.json()["text_output"]


def test_metrics_use_vllms_names(server: ServeProcess) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("kubemaas_time_to_first_token_seconds_bucket", "kubemaas_time_per_output_token_seconds_bucket",
                 "kubemaas_e2e_request_latency_seconds_bucket", "kubemaas_prompt_tokens_total",
                 "kubemaas_generation_tokens_total", "kubemaas_num_requests_running",
                 "kubemaas_num_requests_waiting"):
        assert name in text


def test_a_full_waiting_queue_answers_503_with_retry_after(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"KUBEMAAS_MAX_BATCH_SIZE": "1", "KUBEMAAS_MAX_WAITING": "1", "KUBEMAAS_RETRY_AFTER_S": "2",
           "KUBEMAAS_AUTH_TOKEN": "s3cret"}
    with ServeProcess(tiny_bundle, tmp_path / "log", env=env) as proc:
        headers = {"authorization": "Bearer s3cret"}
        assert httpx.post(f"{proc.url}/v1/completions", json={"model": "textgen", "prompt": "x"}).status_code == 401
        assert httpx.get(f"{proc.url}/v2/health/ready").status_code == 200
        body = {"model": "textgen", "prompt": "Busy", "max_tokens": 1000, "ignore_eos": True}
        # one slot and one waiting place: of six requests sent at once, at most two can be held
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda _: httpx.post(f"{proc.url}/v1/completions", json=body, headers=headers, timeout=60), range(6)))
        refused = [a for a in answers if a.status_code == 503]
        served = [a for a in answers if a.status_code == 200]
        assert len(refused) + len(served) == 6
        assert len(refused) >= 1
        assert {a.headers["retry-after"] for a in refused} == {"2"}
        assert {a.json()["error"]["code"] for a in refused} == {"overloaded"}
        assert {a.json()["usage"]["completion_tokens"] for a in served} == {1000}


def test_a_non_streaming_client_that_disconnects_stops_its_generation(server: ServeProcess) -> None:
    import socket

    url = server.url
    before = metric(httpx.get(f"{url}/metrics").text, "kubemaas_request_aborted_total")
    body = json.dumps({"model": "textgen", "prompt": "Endless", "max_tokens": 1000, "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 20
        while metric(httpx.get(f"{url}/metrics").text, "kubemaas_num_requests_running") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    deadline = time.monotonic() + 20
    while metric(httpx.get(f"{url}/metrics").text, "kubemaas_request_aborted_total") < before + 1:
        assert time.monotonic() < deadline, "the server generated on for a client that had gone"
        time.sleep(0.02)


def test_sigterm_drains_a_stream_in_flight_then_exits_0(tiny_bundle: Path, tmp_path: Path) -> None:
    proc = ServeProcess(tiny_bundle, tmp_path / "log")
    with proc:
        body = {"model": "textgen", "prompt": "Drain", "max_tokens": 600, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{proc.url}/v1/completions", json=body, timeout=60) as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
            proc.popen.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["usage"]["completion_tokens"] == 600
        assert proc.popen.wait(30) == 0
