"""uvicorn's httptools protocol with a bound on the request head: size and time.

httptools is uvicorn's fastest HTTP/1.1 parser but sets no limit on the request line and
headers, and uvicorn sets no time limit on receiving them: one client sending a 64 MiB header
kept the only event loop busy for seconds (uvicorn accumulates the URL and header pieces, a
cost that grows with the square of their size), and a client that sends a byte now and then
holds its connection forever. This subclass counts the bytes of the head as they arrive and
answers 431 past ``max_head_bytes``, and answers 408 when a head has not completed within
``head_timeout_s`` of its first byte (or of the connection opening). The body has its own limit
and timeout (``BodyReader``). h11, uvicorn's other parser, has a size limit but no timeout and
is slower; see the README's serving section for the measurement behind this choice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kubemaas_runtime.serving.asgi import DEPARTURE, Departure

STATUS_TEXT = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; ``bounded_protocol`` makes one with the configured limits."""

    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._begun = False  # no byte of a request yet: a timeout then closes without an answer
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Count the head part of this read before parsing it: a head that arrives whole in
            # one read (a 60 KB header on loopback) completes inside the parser and was never
            # counted. The head ends at the first blank line; what follows is body. A keep-alive
            # connection's later heads are counted (from on_message_begin) only when they span
            # reads, so one that arrives within a single read (asyncio reads at most 256 KiB)
            # escapes the limit.
            end = data.find(b"\r\n\r\n")
            if self._head_bytes + (len(data) if end < 0 else end + 4) > self.max_head_bytes:
                self._refuse(431, f"the request line and headers exceed {self.max_head_bytes} bytes")
                return
        in_head = self._in_head
        super().data_received(data)
        if in_head and self._in_head and not self.transport.is_closing():  # the head is still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"the request line and headers exceed {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[DEPARTURE] = Departure()  # type: ignore[literal-required]
        self._begun = True
        self._in_head = True
        self._head_bytes = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        departure = self.scope.get(DEPARTURE)
        if isinstance(departure, Departure):
            departure.body_complete = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            departure = cycle.scope.get(DEPARTURE)
            if isinstance(departure, Departure):
                departure.leave()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if not self._begun:
            # Nothing was sent: close quietly, as uvicorn's keep-alive timeout does. An
            # unsolicited 408 could be read by a pooled client as the answer to its next request.
            self.transport.close()
            return
        self._refuse(408, f"the request line and headers did not arrive within {self.head_timeout_s:g}s")

    def _refuse(self, status: int, message: str) -> None:
        self._disarm()
        self._in_head = False
        body = b'{"error":"' + message.encode("ascii") + b'"}'
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, STATUS_TEXT[status], len(body), body)
        )
        self.transport.close()


def bounded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[BoundedHttpToolsProtocol]:
    """A ``BoundedHttpToolsProtocol`` subclass with these limits (uvicorn takes a class)."""
    attrs: dict[str, Any] = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s}
    return type("ConfiguredHttpToolsProtocol", (BoundedHttpToolsProtocol,), attrs)
