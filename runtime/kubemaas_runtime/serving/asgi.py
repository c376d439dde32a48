"""Raw ASGI helpers for the hot path: read a bounded body, notice a client that left, look up a header."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from kubemaas_runtime.serving.budget import ByteBudget
from kubemaas_runtime.serving.errors import (
    InvalidInput,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"


class ClientGone(Exception):
    """The client disconnected before its answer; there is nobody to answer (counted as 499)."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a header (``name`` lower-case, as ASGI servers deliver them)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


DEPARTURE = "kubemaas.departure"
"""Scope key of the ``Departure`` a protocol that supports it puts in every request's scope."""


class Departure:
    """Tells a request's handler that its client left (set by ``BoundedHttpToolsProtocol``)."""

    __slots__ = ("body_complete", "gone", "on_leave")

    def __init__(self) -> None:
        self.gone = False
        self.body_complete = False
        """The whole body has arrived: reading it cannot stall, so it needs no timeout."""
        self.on_leave: Callable[[], Any] | None = None

    def leave(self) -> None:
        self.gone = True
        if self.on_leave is not None:
            self.on_leave()


class BodyReader:
    """Reads one request body within the limits, holding its bytes in the shared ``ByteBudget``
    until ``release()``.

    ``limit`` applies to the body as sent and, for ``Content-Encoding: gzip`` or ``deflate``
    (what tritonclient's ``request_compression_algorithm`` sends; Triton decodes both), to the
    decoded body too, which is decoded in bounded steps so a compression bomb stops at the limit.
    Other encodings get 415. A body not complete within ``timeout_s`` gets 408."""

    def __init__(self, budget: ByteBudget, limit: int, timeout_s: float) -> None:
        self.budget = budget
        self.limit = limit
        self.timeout_s = timeout_s
        self.held = 0

    def _take(self, n: int) -> None:
        self.budget.take(n)
        self.held += n

    def release(self) -> None:
        """Give back every byte this reader holds."""
        self.budget.give(self.held)
        self.held = 0

    async def read(self, scope: Scope, receive: Receive) -> bytes:
        """The whole (decoded) body. Raises ``ClientGone``, ``PayloadTooLarge`` (413),
        ``RequestTimeout`` (408), ``UnsupportedMediaType`` (415) or ``Overloaded`` (503)."""
        encoding = header(scope, b"content-encoding")
        if encoding is not None:
            encoding = encoding.strip().lower()
            if encoding in (b"", b"identity"):
                encoding = None
            elif encoding not in DECODERS:
                raise UnsupportedMediaType(
                    f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; use gzip, deflate or none"
                )
        length = header(scope, b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.limit:
                raise PayloadTooLarge(f"request body of {int(length)} bytes exceeds max_body_bytes={self.limit}")
            self._take(int(length))  # before reading a byte: refuse now rather than buffer
            announced = True
        else:
            announced = False
        departure = scope.get(DEPARTURE)
        if departure is not None and departure.body_complete:
            body = await self._receive(receive, announced)  # already here: no timer to arm
        else:
            try:
                async with asyncio.timeout(self.timeout_s):
                    body = await self._receive(receive, announced)
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within body_timeout_s={self.timeout_s:g}"
                ) from None
        if encoding is None:
            return body
        return self._decode(body, encoding)

    async def _receive(self, receive: Receive, announced: bool) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"request body exceeds max_body_bytes={self.limit}")
            if not announced:
                self._take(len(chunk))
            if not message.get("more_body", False):
                return b"".join([*chunks, chunk]) if chunks else chunk
            chunks.append(chunk)

    def _decode(self, body: bytes, encoding: bytes) -> bytes:
        name = encoding.decode("latin-1")
        decoder = DECODERS[encoding]()
        try:
            out: bytes = decoder.decompress(body, self.limit + 1)
            if len(out) > self.limit or decoder.unconsumed_tail:
                raise PayloadTooLarge(f"request body decodes ({name}) to more than max_body_bytes={self.limit}")
            out += decoder.flush()
        except zlib.error as exc:
            raise InvalidInput(f"request body is not valid {name} data: {exc}") from None
        if len(out) > self.limit:
            raise PayloadTooLarge(f"request body decodes ({name}) to more than max_body_bytes={self.limit}")
        if not decoder.eof:
            raise InvalidInput(f"request body is not a complete {name} stream")
        self._take(len(out))
        return out


class _Deflate:
    """Decompresses zlib-wrapped deflate, falling back to raw deflate (both are sent as ``deflate``)."""

    def __init__(self) -> None:
        self._obj: Any = None
        self.unconsumed_tail = b""
        self.eof = False

    def decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            obj = zlib.decompressobj(zlib.MAX_WBITS)
            out = obj.decompress(data, max_length)
        except zlib.error:
            obj = zlib.decompressobj(-zlib.MAX_WBITS)
            out = obj.decompress(data, max_length)
        self._obj = obj
        self.unconsumed_tail = obj.unconsumed_tail
        self.eof = obj.eof
        return out

    def flush(self) -> bytes:
        out: bytes = self._obj.flush()
        self.eof = self._obj.eof
        return out


DECODERS: dict[bytes, Callable[[], Any]] = {
    b"gzip": lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    b"deflate": _Deflate,
}


async def unless_gone(work: Awaitable[T], scope: Scope) -> T:
    """Await ``work`` unless the client leaves first; then cancel it and raise ``ClientGone``.

    Works where the server protocol puts a ``Departure`` in the scope (``kubemaas serve``
    does); elsewhere ``work`` is simply awaited."""
    departure = scope.get(DEPARTURE)
    if departure is None:
        return await work
    task = asyncio.current_task()
    assert task is not None
    departure.on_leave = task.cancel
    try:
        return await work
    except asyncio.CancelledError:
        if not departure.gone:
            raise
        task.uncancel()
        raise ClientGone from None
    finally:
        departure.on_leave = None
