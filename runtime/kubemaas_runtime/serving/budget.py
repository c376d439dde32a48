"""A bound on request-body bytes held in memory across all requests at once.

Memory then grows with the admitted work, not with the number of open connections: a body
that would go past the bound is refused (503 with Retry-After) before it is read when its
length is announced, or as soon as it goes past when it is chunked.
"""

from __future__ import annotations

from kubemaas_runtime.serving.errors import Overloaded


class ByteBudget:
    """``held`` bytes out of ``limit``; single-threaded (the event loop), so no lock."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.held = 0

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes, or raise ``Overloaded`` (nothing held) when they do not fit."""
        if self.held + n > self.limit:
            raise Overloaded(
                f"request bodies already hold {self.held} bytes of max_buffered_bytes={self.limit}; "
                f"{n} more do not fit; retry later",
                self.retry_after_s,
            )
        self.held += n

    def give(self, n: int) -> None:
        """Release ``n`` bytes taken before."""
        self.held -= n
