"""``s3://bucket/prefix`` through boto3; works with MinIO and other S3-compatible endpoints.

The endpoint comes from ``KUBEMAAS_S3_ENDPOINT`` or boto3's own ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, each checked up front for the ``http(s)://host[:port]`` form;
credentials from the standard AWS environment (``AWS_ACCESS_KEY_ID`` ...).

Reads stream ``get_object``'s body through ``streams.copy_stream``: botocore's read timeout
is the stall timeout, and a timer shortens the socket timeout when the fetch's deadline
passes (``StreamingBody.set_socket_timeout``), so a trickling body cannot outlive it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3
import urllib3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from kubemaas_runtime.contracts import env_name
from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings, check_endpoint
from kubemaas_runtime.storage.stores import retrying, safe_rel
from kubemaas_runtime.storage.streams import Deadline, TransientError, check_announced, copy_stream
from kubemaas_runtime.storage.uris import S3Location

AWS_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""boto3's own endpoint variables, most specific first (botocore's service-specific endpoints)."""
EXPIRED_SOCKET_TIMEOUT_S = 0.001


def s3_endpoint(settings: StorageSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The endpoint boto3 will use: ``KUBEMAAS_S3_ENDPOINT``, else boto3's env vars; each checked.

    Raises ``StorageError`` naming the variable, its value and the expected form.
    """
    if settings.s3_endpoint:
        return check_endpoint(env_name("s3_endpoint"), settings.s3_endpoint)
    environ = os.environ if environ is None else environ
    for name in AWS_ENDPOINT_VARS:
        value = environ.get(name)
        if value:
            return check_endpoint(name, value)
    return None


class S3Store:
    def __init__(self, location: S3Location, settings: StorageSettings, deadline: Deadline) -> None:
        self.uri = location.uri
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.settings = settings
        self.deadline = deadline
        endpoint = s3_endpoint(settings)
        config = Config(
            retries={"max_attempts": settings.attempts, "mode": "standard"},
            connect_timeout=settings.stall_timeout_s,
            read_timeout=settings.stall_timeout_s,
        )
        try:
            self.client: Any = boto3.client("s3", endpoint_url=endpoint, config=config)
        except (ValueError, BotoCoreError) as exc:
            raise StorageError(f"{self.uri}: cannot make an S3 client: {exc}") from exc

    def key_of(self, rel: str) -> str:
        rel = safe_rel(self.uri, rel)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def get(self, rel: str, dest: Path, size: int | None = None) -> None:
        key = self.key_of(rel)
        what = f"s3://{self.bucket}/{key}"
        retrying(self.settings, what, lambda: self._get_once(key, what, dest, size), self.deadline)

    def _get_once(self, key: str, what: str, dest: Path, size: int | None) -> None:
        self.deadline.check(what)
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            announced = response.get("ContentLength")
            check_announced(what, announced, size, self.settings.max_bundle_bytes)
            timer = threading.Timer(max(0.0, self.deadline.remaining()), _expire, args=(body,))
            timer.daemon = True
            timer.start()
            try:
                with tmp.open("wb") as out:
                    copy_stream(
                        _reader(body), out, what=what, expected=size if size is not None else announced,
                        limit=self.settings.max_bundle_bytes, deadline=self.deadline,
                        stall_s=self.settings.stall_timeout_s,
                    )
            finally:
                timer.cancel()
                body.close()
            os.replace(tmp, dest)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"{what}: not found") from exc
            raise StorageError(f"{what}: {code or 'error'}: {exc}") from exc
        except ResponseStreamingError as exc:  # the connection broke mid-body
            raise TransientError(f"{what}: {exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            self.deadline.check(what)
            raise StorageError(f"{what}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, src: Path, rel: str) -> None:
        key = self.key_of(rel)
        try:
            self.client.upload_file(str(src), self.bucket, key)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"s3://{self.bucket}/{key}: upload of {src} failed: {exc}") from exc


def _reader(body: Any) -> Callable[[int], bytes]:
    """A ``read1`` over the body for copy_stream: one network read per call.

    botocore's ``StreamingBody.read(n)`` waits for all ``n`` bytes, so the bytes of a trickle
    that then stalls would be lost from the count; urllib3's ``read1`` (the response botocore
    wraps, the same object its ``set_socket_timeout`` reaches into) returns what one read got.
    Read timeouts become ``TimeoutError``; a body cut short ends the stream, and copy_stream
    compares the count with the expected size (truncated).
    """
    raw = getattr(body, "_raw_stream", None)
    read1 = getattr(raw, "read1", None)

    def read(n: int) -> bytes:
        try:
            chunk: bytes = read1(n) if read1 is not None else body.read(n)
        except (ReadTimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise TimeoutError(str(exc)) from exc
        except (IncompleteReadError, ResponseStreamingError, urllib3.exceptions.ProtocolError):
            return b""
        return chunk

    return read


def _expire(body: Any) -> None:
    """At the deadline: the next socket read times out at once (an in-flight one ends at its own timeout)."""
    with contextlib.suppress(AttributeError, OSError):  # the stream is closed already
        body.set_socket_timeout(EXPIRED_SOCKET_TIMEOUT_S)
