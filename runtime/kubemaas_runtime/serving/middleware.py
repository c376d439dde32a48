"""The gateway: the one place a request is routed, authenticated, answered and counted.

Pure ASGI (no framework middleware stack), so the hot path pays a route match, one endpoint
call and one ``send`` pair. Errors from any endpoint become ``{"error": ...}`` with their
status here; a client that left before its answer is counted as 499, never as a 5xx. While
the server drains, every answer says ``Connection: close`` so pooled clients let go of the
connection instead of sending on it as it closes.
"""

from __future__ import annotations

import hmac
import logging
import time
import zlib

from kubemaas_runtime.serving.asgi import ClientGone, Receive, Scope, Send, header
from kubemaas_runtime.serving.dataplane import DataPlane
from kubemaas_runtime.serving.errors import (
    CLIENT_CLOSED,
    InferenceFailed,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    error_body,
)
from kubemaas_runtime.serving.routes import Call, Reply, Router

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
"""Probes and scrapes never need the token."""
COMPRESSIBLE = (b"application/json", b"application/octet-stream", b"text/plain")


def _accepted_encoding(accept: bytes | None) -> bytes | None:
    """gzip or deflate when ``Accept-Encoding`` lists it without ``q=0`` (gzip preferred)."""
    if not accept:
        return None
    offered = set()
    for item in accept.lower().split(b","):
        coding, _, params = item.strip().partition(b";")
        if params.replace(b" ", b"") in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000"):
            continue
        offered.add(coding.strip())
    for coding in (b"gzip", b"deflate"):
        if coding in offered:
            return coding
    return None


def _compress(body: bytes, coding: bytes) -> bytes:
    if coding == b"gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    else:
        c = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS)
    return c.compress(body) + c.flush()


class Gateway:
    """Routes to ``router``'s endpoints for ``plane``; ``token`` turns bearer auth on."""

    def __init__(self, router: Router, plane: DataPlane, token: str | None) -> None:
        self.router = router
        self.plane = plane
        self.expected = f"Bearer {token}".encode() if token is not None else None
        self.max_body_bytes = plane.settings.max_body_bytes
        self.compress_min_bytes = plane.settings.compress_min_bytes

    def _refuse(self, scope: Scope) -> ServingError | None:
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            given = header(scope, b"authorization")
            if given is None:
                return Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
            if not hmac.compare_digest(given, self.expected):
                return Unauthorized("invalid bearer token")
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return PayloadTooLarge(f"request body of {int(length)} bytes exceeds max_body_bytes={self.max_body_bytes}")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        route = "unmatched"
        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                route = "refused"
                raise refusal
            route, endpoint, params = self.router.match(scope["method"], scope["path"])
            reply = await endpoint(Call(scope, receive, params))
        except ClientGone:
            self.plane.metrics.observe_request(route, CLIENT_CLOSED, time.perf_counter() - start)
            return
        except ServingError as exc:
            reply = Reply(error_body(exc.message), exc.status_code, headers=[
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()
            ])
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            failed = InferenceFailed(f"internal error: {type(exc).__name__}: {exc}")
            reply = Reply(error_body(failed.message), failed.status_code)
        try:
            await self._send(scope, send, reply)
        finally:
            self.plane.metrics.observe_request(route, reply.status, time.perf_counter() - start)

    async def _send(self, scope: Scope, send: Send, reply: Reply) -> None:
        body = reply.body
        headers = [(b"content-type", reply.content_type), *reply.headers]
        if len(body) >= self.compress_min_bytes and reply.content_type in COMPRESSIBLE:
            coding = _accepted_encoding(header(scope, b"accept-encoding"))
            if coding is not None:
                body = _compress(body, coding)
                headers += [(b"content-encoding", coding), (b"vary", b"accept-encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        if self.plane.draining:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
