"""Bounded downloads: an overall deadline, a stall timeout, and an exact byte count.

``copy_stream`` is shared by the http(s) and s3 stores. It reads with a ``read1``-style
function (one network read per call, so a server trickling a byte every few seconds
is seen byte by byte), writes to a file, and tells apart the three ways a download
can go wrong: the deadline passed, the stall timeout fired, or the stream ended
before the expected size (truncated) or ran past it (oversized).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from kubemaas_runtime.storage.errors import StorageError

CHUNK = 1 << 20
TIMEOUT_SLACK_S = 0.05
"""A socket timeout this close to the deadline is the deadline's (the timeout was cut to the time left)."""


class TransientError(StorageError):
    """A failure worth another try (connection refused, timeout, 5xx, a cut connection)."""


class DeadlineError(StorageError):
    """The fetch's overall deadline passed; never retried."""


class SizeError(StorageError):
    """The bytes on offer do not match the size the manifest records, or exceed a limit; never retried."""


@dataclass(frozen=True)
class Deadline:
    """One fetch's time budget, on the monotonic clock."""

    seconds: float
    """The budget, as configured (``KUBEMAAS_DEADLINE_S``)."""
    expires_at: float = field(default=0.0)

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        return cls(seconds=seconds, expires_at=time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left; <= 0 once passed."""
        return self.expires_at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, what: str, received: int | None = None, slack: float = 0.0) -> None:
        """Raise ``DeadlineError`` naming ``what`` (and the bytes received) once the deadline passed,
        or is less than ``slack`` seconds away (a socket timeout cut to the time left ends a hair early)."""
        if self.remaining() <= slack:
            raise DeadlineError(self.message(what, received))

    def message(self, what: str, received: int | None = None) -> str:
        got = f" after receiving {received} bytes" if received is not None else ""
        return f"{what}: overall deadline of {self.seconds:g} s passed{got} (KUBEMAAS_DEADLINE_S)"


def stall_message(what: str, stall_s: float, received: int) -> str:
    return f"{what}: stalled: no byte for {stall_s:g} s after receiving {received} bytes (KUBEMAAS_STALL_TIMEOUT_S)"


def truncated_message(what: str, expected: int, received: int) -> str:
    return f"{what}: truncated: expected {expected} bytes, received {received}"


def check_announced(what: str, announced: int | None, expected: int | None, limit: int) -> None:
    """Refuse before reading a body whose announced length (Content-Length) cannot be right.

    ``expected``: the size the manifest records (None: unknown); ``limit``: the most bytes this
    download may write. Raises ``SizeError``.
    """
    if announced is None:
        return
    if expected is not None and announced > expected:
        raise SizeError(f"{what}: the server offers {announced} bytes, but the manifest records {expected}")
    if expected is not None and announced < expected:
        raise SizeError(truncated_message(what, expected, announced) + " (the stored object is shorter)")
    if announced > limit:
        raise SizeError(f"{what}: {announced} bytes is above the limit of {limit} bytes (KUBEMAAS_MAX_BUNDLE_BYTES)")


def copy_stream(
    read1: Callable[[int], bytes],
    out: BinaryIO,
    *,
    what: str,
    expected: int | None,
    limit: int,
    deadline: Deadline,
    stall_s: float,
) -> int:
    """Copy ``read1`` into ``out`` until it returns ``b""``; return the byte count.

    ``read1(n)`` returns at most ``n`` bytes after one network read and raises ``TimeoutError``
    when no byte came within the socket timeout (the caller sets it to ``stall_s`` or less).
    ``expected``: the bytes the stream should carry (the manifest's size, else Content-Length),
    None when unknown; ``limit``: the most bytes it may carry when ``expected`` is None.
    Raises ``DeadlineError`` (deadline passed; checked after every read, so it fires at most
    one stall timeout late), ``TransientError`` (stalled, or fewer bytes than ``expected``)
    or ``SizeError`` (more than ``expected``, or more than ``limit`` bytes).
    """
    received = 0
    cap = expected if expected is not None else limit
    while True:
        deadline.check(what, received)
        try:
            chunk = read1(CHUNK)
        except TimeoutError as exc:
            deadline.check(what, received, slack=TIMEOUT_SLACK_S)
            raise TransientError(stall_message(what, stall_s, received)) from exc
        if not chunk:
            break
        received += len(chunk)
        if received > cap:
            if expected is not None:
                raise SizeError(f"{what}: more than the {expected} bytes expected; refused")
            raise SizeError(f"{what}: more than {limit} bytes, the limit (KUBEMAAS_MAX_BUNDLE_BYTES); refused")
        out.write(chunk)
    if expected is not None and received < expected:
        raise TransientError(truncated_message(what, expected, received))
    return received
