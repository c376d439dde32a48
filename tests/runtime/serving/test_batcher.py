"""The adaptive batcher in-process, on a real event loop with real ONNX Runtime sessions
(or a runner that fails, for the failed-batch path)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from kubemaas_runtime.serving.batching import Batcher, BatchResult, Feeds
from kubemaas_runtime.serving.errors import InferenceFailed, Overloaded
from kubemaas_runtime.serving.model import load_model


class Recorder:
    """A runner that records each batch it gets and answers ``y = 2 * x``, or fails."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.started = threading.Event()
        self.fail = fail
        self.gate = gate

    def __call__(self, feeds: Feeds) -> tuple[Feeds, float]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batches.append(feeds["x"].shape[0])
        if self.fail:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : index 99 is out of bounds")
        return {"y": feeds["x"] * 2}, 0.001


def rows(n: int, start: float) -> Feeds:
    return {"x": np.arange(start, start + 3 * n, dtype=np.float32).reshape(n, 3)}


def test_concurrent_requests_merge_and_get_their_own_rows() -> None:
    runner = Recorder()

    async def main() -> list[Feeds]:
        batcher = Batcher(runner, max_batch_size=32, max_delay_ms=50)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(rows(n, 100 * n), n) for n in (1, 4, 2, 3)))
        finally:
            await batcher.stop()
        return [r.outputs for r in results]

    outputs = asyncio.run(main())
    assert runner.batches == [1 + 4 + 2 + 3]
    for n, out in zip((1, 4, 2, 3), outputs, strict=True):
        np.testing.assert_array_equal(out["y"], rows(n, 100 * n)["x"] * 2)


def test_a_failed_batch_is_rerun_per_request_and_each_gets_its_own_error() -> None:
    runner = Recorder(fail=True)

    async def main() -> list[BaseException | object]:
        batcher = Batcher(runner, max_batch_size=32, max_delay_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(rows(n, 0), n) for n in (2, 1, 5)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert runner.batches == [2 + 1 + 5, 2, 1, 5]
    assert len(results) == 3
    for r in results:
        assert isinstance(r, InferenceFailed)
        assert r.status_code == 500
        assert "index 99 is out of bounds" in str(r)


def test_batches_never_exceed_max_rows_and_shapes_do_not_mix() -> None:
    runner = Recorder()

    async def main() -> None:
        batcher = Batcher(runner, max_batch_size=4, max_delay_ms=50)
        await batcher.start()
        wide = {"x": np.zeros((1, 5), np.float32)}
        try:
            await asyncio.gather(
                batcher.submit(rows(3, 0), 3), batcher.submit(rows(2, 0), 2), batcher.submit(wide, 1),
                batcher.submit(rows(1, 0), 1),
            )
        finally:
            await batcher.stop()

    asyncio.run(main())
    # FIFO: [3] (2 would make 5 > 4), then [2] (next has other trailing dims), then [wide], then [1].
    assert runner.batches == [3, 2, 1, 1]


def test_full_queue_refuses_with_retry_after() -> None:
    gate = threading.Event()
    runner = Recorder(gate=gate)

    async def main() -> None:
        batcher = Batcher(runner, max_batch_size=1, max_queue=2, retry_after_s=3)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(rows(1, 0), 1))
            assert await asyncio.to_thread(runner.started.wait, 10)  # ONNX Runtime's thread holds it
            # The next request is taken into the batch being collected; two more fill the queue.
            accepted: list[asyncio.Future[BatchResult]] = []
            for _ in range(3):
                accepted.append(asyncio.ensure_future(batcher.submit(rows(1, 0), 1)))
                await asyncio.sleep(0.005)
            assert batcher.depth == 2
            with pytest.raises(Overloaded) as refused:
                await batcher.submit(rows(1, 0), 1)
            assert refused.value.status_code == 503
            assert refused.value.headers == {"retry-after": "3"}
            gate.set()
            done = await asyncio.gather(first, *accepted)
            assert [r.batch_rows for r in done] == [1, 1, 1, 1]
        finally:
            gate.set()
            await batcher.stop()

    asyncio.run(main())


def test_batched_onnx_runtime_matches_direct_calls(tmp_path: Path) -> None:
    from tests.runtime.serving.models import mlp

    model = load_model(mlp(tmp_path / "m"))
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 3, 2)]

    async def main() -> list[Feeds]:
        batcher = Batcher(model.run, max_batch_size=32, max_delay_ms=50)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit({"x": p}, len(p)) for p in parts))
        finally:
            await batcher.stop()
        assert {r.batch_rows for r in results} == {6}
        return [r.outputs for r in results]

    for part, out in zip(parts, asyncio.run(main()), strict=True):
        direct, _ = model.run({"x": part})
        np.testing.assert_allclose(out["probs"], direct["probs"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out["logits"], direct["logits"], rtol=1e-5, atol=1e-6)
