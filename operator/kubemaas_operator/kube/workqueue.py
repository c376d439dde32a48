"""A coalescing per-object work queue on the operator's event loop.

Watches on children (Deployments, Jobs, Pods) and on TrainingJobs ``kick()`` the owning
ModelService; bursts of events collapse into at most one running and one pending sync per
object, and syncs of one object never overlap (``run()`` from the kopf handlers shares the
same per-object lock). Failed syncs are retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]
"""(namespace, name)"""

SyncFn = Callable[[Key, bool], Awaitable[None]]
"""sync(key, force): force=True re-applies every child even when nothing seems to have changed."""

log = logging.getLogger("kubemaas.workqueue")


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: bool = False
    force: bool = False
    failures: int = 0


class WorkQueue:
    def __init__(self, sync: SyncFn, *, base_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self._sync = sync
        self._entries: dict[Key, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_delay = base_delay
        self.max_delay = max_delay

    def _entry(self, key: Key) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    def kick(self, key: Key, *, force: bool = False, delay: float = 0.0) -> None:
        """Schedule a sync of ``key``; a no-op when one is already pending (force is OR-ed).

        With ``delay``, the kick itself happens later, so it never holds back kicks made meanwhile.
        """
        if delay > 0:
            self._spawn(self._later(key, force, delay))
            return
        entry = self._entry(key)
        entry.force = entry.force or force
        if entry.pending:
            return
        entry.pending = True
        self._spawn(self._worker(key))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, key: Key, force: bool, delay: float) -> None:
        await asyncio.sleep(delay)
        self.kick(key, force=force)

    async def _worker(self, key: Key) -> None:
        entry = self._entry(key)
        async with entry.lock:
            # Cleared under the lock: events arriving while this sync runs schedule one more.
            entry.pending = False
            force, entry.force = entry.force, False
            try:
                await self._sync(key, force)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.failures += 1
                retry = min(self.max_delay, self.base_delay * 2 ** min(entry.failures - 1, 10))
                log.warning("sync of %s/%s failed (%s); retrying in %.0fs", *key, exc, retry)
                self.kick(key, force=force, delay=retry)
            else:
                entry.failures = 0

    async def run(self, key: Key, *, force: bool = True) -> None:
        """Sync ``key`` now (serialized with queued syncs); exceptions propagate to the caller."""
        entry = self._entry(key)
        async with entry.lock:
            await self._sync(key, force or entry.force)

    def forget(self, key: Key) -> None:
        """Drop bookkeeping for a deleted object (a pending sync still runs and finds nothing)."""
        entry = self._entries.get(key)
        if entry is not None and not entry.pending and not entry.lock.locked():
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
