"""Parse storage URIs into locations: a local directory, an http(s) base URL, or an S3 prefix.

Accepted forms (contract 2): a plain path, ``file://``, ``pvc://<claim>/<path>``,
``http(s)://`` (a base URL) and ``s3://bucket/prefix``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from kubemaas_runtime.storage.errors import StorageError
from kubemaas_runtime.storage.settings import StorageSettings, load_settings

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
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


def parse_uri(uri: str, settings: StorageSettings | None = None) -> Location:
    """Turn a URI into a location, or raise ``StorageError`` naming the URI and the problem."""
    if not uri or not uri.strip():
        raise StorageError("storage URI is empty")
    settings = settings or load_settings()
    if "://" not in uri:
        return LocalLocation(uri=uri, path=Path(uri).expanduser())
    parts = urlsplit(uri)
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
        return HttpLocation(uri=uri, base=uri.rstrip("/"))
    if scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.match(bucket):
            raise StorageError(f"{uri!r}: bucket name {bucket!r} is not a valid S3 bucket name")
        return S3Location(uri=uri, bucket=bucket, prefix=_relative(uri, unquote(parts.path), "key prefix"))
    raise StorageError(
        f"{uri!r}: unsupported scheme {parts.scheme!r}; use a path, file://, pvc://, http(s):// or s3://"
    )
