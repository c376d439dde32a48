"""Errors that carry their HTTP status (MLServer style); one renderer turns any of them into
``{"error": "..."}`` so every surface answers bad input the same way."""

from __future__ import annotations

import orjson


class ServingError(Exception):
    """Base: an error a client may see. Subclasses set ``status_code``."""

    status_code = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's signature."""

    status_code = 400


class Unauthorized(ServingError):
    """Missing or wrong bearer token."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"www-authenticate": 'Bearer realm="kubemaas"'})


class NotFound(ServingError):
    """Unknown model, version or route."""

    status_code = 404


class MethodNotAllowed(ServingError):
    """The path exists for another method."""
    status_code = 405


class RequestTimeout(ServingError):
    """The client did not send its whole body in time."""

    status_code = 408


class PayloadTooLarge(ServingError):
    """The body (or the decoded body) is over ``max_body_bytes``."""
    status_code = 413


class UnsupportedMediaType(ServingError):
    """A Content-Encoding this server does not decode."""
    status_code = 415


class InferenceFailed(ServingError):
    """ONNX Runtime raised while running a batch."""

    status_code = 500


class Unavailable(ServingError):
    """Not ready yet, draining, or the queue is full."""

    status_code = 503


class Overloaded(Unavailable):
    """The queue or the buffered-bytes bound is full: 503 with ``Retry-After``."""
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, {"retry-after": str(retry_after_s)})


CLIENT_CLOSED = 499
"""The status recorded (never sent) for a client that left before its answer (nginx's
"client closed request"), so 5xx alerts count only the server's own failures."""


def error_body(message: str) -> bytes:
    """``{"error": message}`` as JSON bytes."""
    return orjson.dumps({"error": message})

