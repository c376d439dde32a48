"""Text-generation pods are judged on time to first token and time per output token.

Two real ``kubemaas serve`` processes serve a real tiny text-generation bundle (trained here by
the textgen recipe on two local ranks, as tests/runtime/generation does); the official
``openai`` client sends completions, ``PodMetrics`` scrapes the generation server's own
``/metrics`` and ``judge`` compares the two on the vLLM-style histograms.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from kubemaas_operator.rollout.judgement import judge
from kubemaas_operator.rollout.scrape import PodMetrics
from kubemaas_operator.rollout.spec import Analysis
from kubemaas_runtime.serving.process import ServeProcess
from tests.runtime.generation.conftest import train_tiny

pytestmark = pytest.mark.slow

EXACT = {"ignore_eos": True}
"""vLLM's extension: exactly max_tokens tokens, so every request has output tokens to time."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    tmp = tmp_path_factory.mktemp("textgen-rollout")
    train_tiny(tmp / "bundle", tmp / "logs")
    with ServeProcess(tmp / "bundle", tmp / "stable.log") as stable, ServeProcess(tmp / "bundle", tmp / "canary.log") as canary:
        yield stable, canary


def complete(server: ServeProcess, n: int) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none")
    for i in range(n):
        client.completions.create(model="textgen", prompt=f"Lists are {i}", max_tokens=6, temperature=0,
                                  extra_body=EXACT)


def test_generation_traffic_is_compared_on_ttft_and_tpot(servers: tuple[ServeProcess, ServeProcess]) -> None:
    stable, canary = servers
    s, c = PodMetrics(count_from_start=False), PodMetrics(count_from_start=False)
    s.interval({"stable-0": f"{stable.url}/metrics"})
    c.interval({"canary-0": f"{canary.url}/metrics"})
    complete(stable, 24)
    complete(canary, 24)
    canary_traffic = c.interval({"canary-0": f"{canary.url}/metrics"}).traffic
    stable_traffic = s.interval({"stable-0": f"{stable.url}/metrics"}).traffic
    assert (canary_traffic.requests, canary_traffic.ttft.count) == (24, 24)
    assert canary_traffic.tpot.count == 24 * 5  # the gaps between 6 tokens
    v = judge(canary_traffic, stable_traffic, Analysis())
    assert v.decision != "inconclusive"
    assert {"ttft_ratio", "tpot_ratio"} <= v.numbers.keys()
    assert "latency_ratio" not in v.numbers  # whole-request latency depends on what clients ask for
