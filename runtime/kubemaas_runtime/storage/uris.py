"""Parse storage URIs into locations: a local directory, an http(s) base URL, or an S3 prefix.

Accepted forms (contract 2): a plain path, ``file://``, ``pvc://<claim>/<path>``,
``http(s)://`` (a base URL) and ``s3://bucket/prefix``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit

from kubemaas_runtime.storage.errors import StorageError
from kubemaas_runtime.storage.settings import StorageSettings, load_settings

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
OTHER_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".gz")
"""Archives other storage initializers take (KServe's: .zip, .tar) that fetch does not extract."""
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class LocalLocation:
    uri: str
    path: Path


@dataclass(frozen=True)
class HttpLocation:
    uri: str
    base: str
    """Base URL without a trailing slash; files live at ``<base>/<relative path>``."""


@dataclass(frozen=True)
class S3Location:
    uri: str
    bucket: str
    prefix: str
    """Key prefix without leading or trailing slash ('' for the bucket root)."""


Location = LocalLocation | HttpLocation | S3Location


def is_archive(uri: str) -> bool:
    return uri.rstrip("/").endswith(ARCHIVE_SUFFIXES)


def unsupported_archive(uri: str) -> str | None:
    """The suffix of an archive format ``fetch`` does not extract, or None."""
    trimmed = uri.rstrip("/").lower()
    return next((sfx for sfx in OTHER_ARCHIVE_SUFFIXES if trimmed.endswith(sfx)), None)


def split_archive(uri: str) -> tuple[str, str]:
    """``.../bundle.tar.gz`` -> (the parent URI, ``bundle.tar.gz``)."""
    trimmed = uri.rstrip("/")
    parent, _, name = trimmed.rpartition("/")
    if not name or not parent:
        raise StorageError(f"{uri!r}: an archive URI needs a parent location and a file name")
    if parent.endswith(":/"):  # "s3://x.tar.gz" style: no bucket or host
        raise StorageError(f"{uri!r}: an archive URI needs a bucket or host before the file name")
    return parent, name


def _relative(uri: str, raw: str, what: str) -> str:
    rel = raw.strip("/")
    if rel and ".." in PurePosixPath(rel).parts:
        raise StorageError(f"{uri!r}: {what} {raw!r} must not contain '..'")
    return rel


def _check_http_authority(uri: str, parts: SplitResult) -> None:
    """Refuse what urllib would only fail on at connect time, after retries: credentials in the URL
    (they would show in logs and in the pod's termination message; the URI in the error is redacted),
    a host with spaces or control characters, and a port that is not a number in 1-65535."""
    netloc = parts.netloc
    if "@" in netloc:
        redacted = uri.replace(netloc, "***@" + netloc.rpartition("@")[2], 1)
        raise StorageError(
            f"{redacted!r}: credentials in an http(s) URI are not supported (they would be logged); "
            "serve the bundle without them or use s3:// with credentials in the storage Secret"
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in netloc):
        raise StorageError(f"{uri!r}: host {netloc!r} contains spaces or control characters")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise StorageError(f"{uri!r}: port {netloc.rpartition(':')[2]!r} is not a number in 1-65535")
    if not parts.hostname:
        raise StorageError(f"{uri!r}: http(s) URI has no host")


def parse_uri(uri: str, settings: StorageSettings | None = None) -> Location:
    """Turn a URI into a location, or raise ``StorageError`` naming the URI and the problem."""
    if not uri or not uri.strip():
        raise StorageError("storage URI is empty")
    settings = settings or load_settings()
    if "://" not in uri:
        return LocalLocation(uri=uri, path=Path(uri).expanduser())
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. "http://[::1" (Invalid IPv6 URL)
        raise StorageError(f"{uri!r}: not a valid URI: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri!r}: file:// URIs must not name a host (got {parts.netloc!r})")
        if not parts.path:
            raise StorageError(f"{uri!r}: file:// URI has no path")
        return LocalLocation(uri=uri, path=Path(unquote(parts.path)))
    if scheme == "pvc":
        claim = parts.netloc
        if not _CLAIM.match(claim):
            raise StorageError(f"{uri!r}: claim name {claim!r} is not a valid PersistentVolumeClaim name")
        rel = _relative(uri, unquote(parts.path), "path")
        return LocalLocation(uri=uri, path=settings.pvc_root / claim / rel)
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise StorageError(f"{uri!r}: http(s) URI has no host")
        if parts.query or parts.fragment:
            raise StorageError(f"{uri!r}: query strings and fragments are not supported in a base URL")
        _check_http_authority(uri, parts)
        return HttpLocation(uri=uri, base=uri.rstrip("/"))
    if scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.match(bucket):
            raise StorageError(f"{uri!r}: bucket name {bucket!r} is not a valid S3 bucket name")
        if parts.query or parts.fragment:
            raise StorageError(f"{uri!r}: '?' and '#' would be dropped from the key prefix; "
                               "percent-encode them (%3F, %23) if the keys contain them")
        return S3Location(uri=uri, bucket=bucket, prefix=_relative(uri, unquote(parts.path), "key prefix"))
    raise StorageError(
        f"{uri!r}: unsupported scheme {parts.scheme!r}; use a path, file://, pvc://, http(s):// or s3://"
    )


def _tree_key(uri: str, settings: StorageSettings | None) -> tuple[str, tuple[str, ...]]:
    """A location as (store, path segments) with local paths absolute and symlinks resolved."""
    location = parse_uri(uri, settings)
    if isinstance(location, LocalLocation):
        return "file://", location.path.expanduser().resolve().parts
    if isinstance(location, S3Location):
        return f"s3://{location.bucket}", tuple(p for p in location.prefix.split("/") if p)
    parts = urlsplit(location.base)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}", tuple(p for p in parts.path.split("/") if p)


def nesting(first: str, second: str, settings: StorageSettings | None = None) -> str | None:
    """How location ``first`` sits relative to ``second``: ``"the same location as"``, ``"inside"``,
    ``"contains"``, or None when the two trees do not overlap (or either URI does not parse; reading
    it reports that later).

    Local forms (plain paths, relative or through symlinks, ``file://``, ``pvc://``) compare as
    resolved absolute paths, so ``out`` and ``./b/../out`` are one location; ``s3://`` by bucket and
    key-prefix segments; ``http(s)://`` by host and path segments. Archives compare as their file.
    """
    try:
        (store_a, a), (store_b, b) = _tree_key(first, settings), _tree_key(second, settings)
    except (StorageError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    if store_a != store_b:
        return None
    if a == b:
        return "the same location as"
    if a[: len(b)] == b:
        return "inside"
    if b[: len(a)] == a:
        return "contains"
    return None
