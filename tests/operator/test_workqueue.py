"""The coalescing work queue: bursts collapse, syncs of one key never overlap, failures retry."""

from __future__ import annotations

import asyncio

from kubemaas_operator.kube.workqueue import Key, WorkQueue


async def _drain(queue: WorkQueue, until: asyncio.Event) -> None:
    async with asyncio.timeout(5.0):
        await until.wait()


async def _settle(queue: WorkQueue, key: Key) -> None:
    """Wait (with a deadline) until no sync of ``key`` runs or waits."""
    async with asyncio.timeout(5.0):
        await queue.settled(key)


def test_burst_of_kicks_coalesces_and_never_overlaps() -> None:
    runs: list[tuple[Key, bool]] = []
    active = 0
    overlap = False
    gate = asyncio.Event

    async def main() -> None:
        nonlocal active, overlap
        release = gate()
        second = gate()

        async def sync(key: Key, force: bool) -> None:
            nonlocal active, overlap
            active += 1
            overlap = overlap or active > 1
            runs.append((key, force))
            if len(runs) == 1:
                await release.wait()
            else:
                second.set()
            active -= 1

        queue = WorkQueue(sync)
        queue.kick(("ns", "a"))
        await asyncio.sleep(0)  # the first sync starts and blocks
        for _ in range(50):
            queue.kick(("ns", "a"))
        queue.kick(("ns", "a"), force=True)
        release.set()
        await _drain(queue, second)
        await _settle(queue, ("ns", "a"))  # nothing runs or waits: there is no third sync

    asyncio.run(main())
    assert runs == [(("ns", "a"), False), (("ns", "a"), True)]  # 52 kicks -> 2 syncs, force carried
    assert overlap is False


def test_failed_sync_is_retried() -> None:
    calls: list[int] = []

    async def main() -> None:
        done = asyncio.Event()

        async def sync(key: Key, force: bool) -> None:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("API hiccup")
            done.set()

        queue = WorkQueue(sync, base_delay=0.01)
        queue.kick(("ns", "b"))
        await _drain(queue, done)

    asyncio.run(main())
    assert len(calls) == 3


def test_failures_during_resyncs_keep_one_retry_timer() -> None:
    calls: list[int] = []
    key = ("ns", "f")

    async def main() -> tuple[int, float]:
        async def sync(key: Key, force: bool) -> None:
            calls.append(1)
            raise RuntimeError("429 Too Many Requests")

        queue = WorkQueue(sync, base_delay=60.0, max_delay=10_000.0)
        for _ in range(5):  # five periodic resyncs of an object whose sync keeps failing
            queue.kick(key, force=True)
            await _settle(queue, key)
        return queue.timers(key), queue.retry_delay(key)

    timers, delay = asyncio.run(main())
    assert len(calls) == 5
    assert timers == 1  # not one retry chain per resync
    assert delay == 60.0 * 2 ** (5 - 1)  # the back-off kept growing across resyncs


def test_requeue_after_replaces_the_previous_request() -> None:
    key = ("ns", "t")

    async def main() -> int:
        async def sync(key: Key, force: bool) -> None:
            return None

        queue = WorkQueue(sync)
        queue.requeue_after(key, 30)
        queue.requeue_after(key, 10)
        await asyncio.sleep(0)
        timers = queue.timers(key)
        queue.shutdown()
        return timers

    assert asyncio.run(main()) == 1


def test_a_delayed_kick_does_not_hold_back_an_immediate_one() -> None:
    runs: list[float] = []

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def sync(key: Key, force: bool) -> None:
            runs.append(loop.time() - start)
            done.set()

        queue = WorkQueue(sync)
        queue.kick(("ns", "c"), delay=30)
        queue.kick(("ns", "c"))
        await _drain(queue, done)

    asyncio.run(main())
    assert len(runs) == 1


def test_cache_keeps_the_newer_version_of_an_object() -> None:
    from kubemaas_operator.kube.cache import Cache

    cache = Cache()
    new = {"kind": "Deployment", "metadata": {"namespace": "ns", "name": "d", "uid": "u", "resourceVersion": "12"}}
    old = {"kind": "Deployment", "metadata": {"namespace": "ns", "name": "d", "uid": "u", "resourceVersion": "9"}}
    cache.put(new)
    cache.put(old)  # a late watch event
    assert cache.get("Deployment", "ns", "d") == new
    recreated = {"kind": "Deployment", "metadata": {"namespace": "ns", "name": "d", "uid": "v", "resourceVersion": "3"}}
    cache.put(recreated)
    assert cache.get("Deployment", "ns", "d") == recreated
    cache.drop("Deployment", "ns", "d")
    assert cache.get("Deployment", "ns", "d") is None
