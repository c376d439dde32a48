"""uvicorn's httptools protocol with a bound on the request head: size and time.

httptools is uvicorn's fastest HTTP/1.1 parser but sets no limit on the request line and
headers, and uvicorn sets no time limit on receiving them: one client sending a 64 MiB header
kept the only event loop busy for seconds (uvicorn accumulates the URL and header pieces, a
cost that grows with the square of their size), and a client that sends a byte now and then
holds its connection forever. This subclass bounds every request head of a connection, keep-alive
and pipelined ones included, and answers 431 past ``max_head_bytes``: a head that spans reads is
counted read by read as it arrives (refused before the parser has buffered more than one read past
the limit), and each head is measured whole once parsed (the request line and header fields the
parser delivers), which catches the heads that complete within one read. It answers 408 when a head
has not completed within ``head_timeout_s`` of its first byte (or of the connection opening).
Refusals keep HTTP/1.1's order: one that comes while an earlier request of the connection is
still being answered is sent after that answer (RFC 9112 section 9.3.2), then the connection
closes. The body has its own limit and timeout (``BodyReader``). h11, uvicorn's other parser, has a size limit but no timeout and
is slower; see the README's serving section for the measurement behind this choice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kubemaas_runtime.serving.asgi import DEPARTURE, ASGIApp, Departure, Receive, Scope, Send

STATUS_TEXT = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
REQUEST_LINE_BYTES = len(b"  HTTP/1.1\r\n")
"""Bytes of a request line besides its method and target: two spaces, the version, CRLF."""
FIELD_BYTES = len(b": \r\n")
"""Bytes of a header field line besides its name and value."""


def refusal(status: int, message: str) -> tuple[bytes, bytes]:
    """(head, body) of a refusal: ``{"error": message}`` with ``connection: close``."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, STATUS_TEXT[status], len(body)))
    return head, body


def refusal_app(status: int, message: str) -> ASGIApp:
    """An ASGI app that answers every request with ``refusal(status, message)``: uvicorn queues it
    behind the connection's earlier requests like any pipelined request and closes after it."""
    _, body = refusal(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


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
        self._parsed_head = 0  # bytes of the current head's target and fields, as the parser delivers them
        self._deferred: tuple[int, str] | None = None  # a refusal waiting for an earlier answer
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._deferred is not None:  # refused; waiting only to send the refusal in order
            return
        if self._in_head:
            # Count the head part of this read before parsing it, so an oversized first head is
            # refused without parsing it at all. The head ends at the first blank line; what
            # follows is body. Only while waiting for a head at a read's start: a read that ends
            # one message and begins the next is not split here (an early answer, such as a 503
            # before the body, leaves body bytes to arrive that must not count as a head); a head
            # that begins or ends within a read is measured whole in on_headers_complete.
            end = data.find(b"\r\n\r\n")
            if self._head_bytes + (len(data) if end < 0 else end + 4) > self.max_head_bytes:
                self._refuse(431, self._too_large())
                return
        in_head = self._in_head
        super().data_received(data)
        if in_head and self._in_head and not self.transport.is_closing():  # the head is still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, self._too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[DEPARTURE] = Departure()  # type: ignore[literal-required]
        self._begun = True
        self._in_head = True
        self._head_bytes = 0
        self._parsed_head = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._parsed_head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_head += len(name) + len(value) + FIELD_BYTES
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        # The whole head as parsed: request line, field lines and the blank line (exact for
        # "Name: value" fields; optional whitespace around values is not counted).
        size = self._parsed_head + len(self.parser.get_method()) + REQUEST_LINE_BYTES + 2
        if size <= self.max_head_bytes:
            super().on_headers_complete()
            return
        # Answer through uvicorn's request cycle, so a pipelined head's 431 follows the answers
        # to the requests before it; its connection: close ends the connection after it.
        app, self.app = self.app, refusal_app(431, self._too_large())
        try:
            super().on_headers_complete()
        finally:
            self.app = app

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

    def on_response_complete(self) -> None:
        if self._deferred is not None and not self.pipeline and not self.transport.is_closing():
            status, message = self._deferred  # every earlier request is answered: now the refusal
            self.server_state.total_requests += 1
            self._write_refusal(status, message)
            return
        super().on_response_complete()

    def _too_large(self) -> str:
        return f"the request line and headers exceed {self.max_head_bytes} bytes"

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` now, or after the answers still owed on this connection (HTTP/1.1
        answers in request order), and close."""
        self._disarm()
        self._in_head = False
        owed = self.cycle is not None and not self.cycle.response_complete
        if owed or self.pipeline:
            self._deferred = (status, message)
            self.flow.pause_reading()
            return
        self._write_refusal(status, message)

    def _write_refusal(self, status: int, message: str) -> None:
        head, body = refusal(status, message)
        self.transport.write(head + body)
        self.transport.close()


def bounded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[BoundedHttpToolsProtocol]:
    """A ``BoundedHttpToolsProtocol`` subclass with these limits (uvicorn takes a class)."""
    attrs: dict[str, Any] = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s}
    return type("ConfiguredHttpToolsProtocol", (BoundedHttpToolsProtocol,), attrs)
