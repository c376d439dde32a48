"""Errors raised by the storage layer; every message names the URI and the problem."""

from __future__ import annotations


class StorageError(ValueError):
    """A URI is malformed, unreachable, refused, or holds a bad bundle."""


class NotFoundError(StorageError):
    """The object does not exist at that location (the store answered, the file is absent)."""
