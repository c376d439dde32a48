"""A ``Store`` reads and writes single files below one location; ``open_store`` picks the backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from kubemaas_runtime.bundle import check_relative
from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings, load_settings
from kubemaas_runtime.storage.streams import Deadline, DeadlineError, TransientError
from kubemaas_runtime.storage.uris import HttpLocation, LocalLocation, S3Location, parse_uri

T = TypeVar("T")


class Store(Protocol):
    uri: str

    def get(self, rel: str, dest: Path, size: int | None = None) -> None:
        """Copy ``<location>/<rel>`` to the local file ``dest``; ``NotFoundError`` if it is absent.

        ``size``: the bytes the manifest records for it (None: unknown, then bounded by
        ``max_bundle_bytes``); a different size is refused or reported as truncated.
        """
        ...

    def put(self, src: Path, rel: str) -> None:
        """Copy the local file ``src`` to ``<location>/<rel>`` (replacing it)."""
        ...


def safe_rel(uri: str, rel: str) -> str:
    try:
        return check_relative(rel).as_posix()
    except ValueError as exc:
        raise StorageError(f"{uri}: {exc}") from exc


def retrying(settings: StorageSettings, what: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
    """Run ``fn`` up to ``settings.attempts`` times while it raises ``TransientError``.

    No try starts, and no pause runs, past ``deadline``: then ``DeadlineError`` says so.
    """
    delay = settings.retry_backoff_s
    for attempt in range(1, settings.attempts + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt == settings.attempts:
                raise StorageError(f"{what}: gave up after {attempt} tries: {exc}") from exc
            if deadline is not None and deadline.remaining() <= delay:
                raise DeadlineError(f"{deadline.message(what)} before try {attempt + 1}: {exc}") from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def open_store(uri: str, settings: StorageSettings | None = None, deadline: Deadline | None = None) -> Store:
    """The store for ``uri``; remote reads obey ``deadline`` (default: a fresh ``settings.deadline_s``)."""
    settings = settings or load_settings()
    location = parse_uri(uri, settings)
    if isinstance(location, LocalLocation):
        from kubemaas_runtime.storage.local import LocalStore

        return LocalStore(location, settings.max_bundle_bytes)
    if isinstance(location, HttpLocation):
        from kubemaas_runtime.storage.http import HttpStore

        return HttpStore(location, settings, deadline or Deadline.start(settings.deadline_s))
    if isinstance(location, S3Location):
        from kubemaas_runtime.storage.s3 import S3Store

        return S3Store(location, settings, deadline or Deadline.start(settings.deadline_s))
    raise AssertionError(f"unknown location {location!r}")  # pragma: no cover


__all__ = ["NotFoundError", "StorageError", "Store", "TransientError", "open_store", "retrying", "safe_rel"]
