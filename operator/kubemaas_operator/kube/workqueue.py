"""A coalescing per-object work queue on the operator's event loop (client-go's workqueue in
spirit: dirty set, per-key processing, rate-limited requeue).

Watch events of an object and of its children ``kick()`` the object; bursts of events collapse
into at most one running and one pending sync per object, and syncs of one object never overlap.
A failed sync is retried with capped exponential back-off through ONE retry timer per object:
a new failure replaces the timer instead of adding one, so periodic resyncs of a failing object
never pile up retries. ``kick(delay=...)`` timers (e.g. a TTL that falls due) are separate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from kubemaas_operator.kube.client import ApiException, api_message

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
    retry: asyncio.Task[None] | None = None
    later: asyncio.Task[None] | None = None


class WorkQueue:
    """Per-object syncs of ``sync(key, force)``, coalesced and serialized (see the module doc)."""

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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def requeue_after(self, key: Key, delay: float) -> None:
        """Sync ``key`` again in ``delay`` seconds (controller-runtime's ``RequeueAfter``): one such
        timer per object, a new request replacing the previous one."""
        entry = self._entry(key)
        if entry.later is not None:
            entry.later.cancel()
        entry.later = self._spawn(self._later(key, False, delay))

    def retry_delay(self, key: Key) -> float:
        """The back-off before the next retry of ``key``: base * 2**(failures-1), capped at max_delay."""
        failures = self._entry(key).failures
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(max(failures - 1, 0), 10)))

    def timers(self, key: Key) -> int:
        """Retry and requeue-after timers of ``key`` still waiting (0, 1 or 2)."""
        entry = self._entry(key)
        return sum(1 for timer in (entry.retry, entry.later) if timer is not None and not timer.done())

    def busy(self, key: Key) -> bool:
        """Whether a sync of ``key`` is running or queued."""
        entry = self._entry(key)
        return entry.pending or entry.lock.locked()

    async def settled(self, key: Key) -> None:
        """Return once no sync of ``key`` runs or waits (timers aside): each round waits for the
        running sync's lock, then lets a queued one start."""
        entry = self._entry(key)
        while self.busy(key):
            async with entry.lock:
                pass
            await asyncio.sleep(0)  # a queued worker takes the lock next

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
                retry = self.retry_delay(key)
                log.warning("sync of %s/%s failed (%s); retrying in %.0fs", *key, _brief(exc), retry)
                if entry.retry is not None and entry.retry is not asyncio.current_task():
                    entry.retry.cancel()
                entry.retry = self._spawn(self._later(key, force, retry))
            else:
                entry.failures = 0
                if entry.retry is not None:
                    entry.retry.cancel()
                    entry.retry = None

    async def run(self, key: Key, *, force: bool = True) -> None:
        """Sync ``key`` now (serialized with queued syncs); exceptions propagate to the caller."""
        entry = self._entry(key)
        async with entry.lock:
            await self._sync(key, force or entry.force)

    def forget(self, key: Key) -> None:
        """Drop bookkeeping for a deleted object (a pending sync still runs and finds nothing)."""
        entry = self._entries.get(key)
        for timer in (entry.retry, entry.later) if entry is not None else ():
            if timer is not None:
                timer.cancel()
        if entry is not None and not entry.pending and not entry.lock.locked():
            del self._entries[key]

    def shutdown(self) -> None:
        """Cancel every timer and queued sync (the operator is stopping)."""
        for task in list(self._tasks):
            task.cancel()

    def __len__(self) -> int:
        """Objects with bookkeeping (a deleted object's entry goes with ``forget``)."""
        return len(self._entries)



def _brief(exc: BaseException) -> str:
    """One line about a failed sync: an API error's status and message, not its headers and body."""
    if isinstance(exc, ApiException):
        return f"API error {exc.status}: {api_message(exc)}"
    return f"{type(exc).__name__}: {exc}"
