"""Plain paths, ``file://`` and ``pvc://`` (a claim the operator mounted under ``pvc_root``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubemaas_runtime.bundle import MANIFEST
from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.stores import safe_rel
from kubemaas_runtime.storage.streams import SizeError
from kubemaas_runtime.storage.uris import LocalLocation


class LocalStore:
    def __init__(self, location: LocalLocation, max_bytes: int) -> None:
        self.uri = location.uri
        self.root = location.path
        self.max_bytes = max_bytes
        """Most bytes one ``get`` of a file of unknown size may copy (``KUBEMAAS_MAX_BUNDLE_BYTES``)."""

    def get(self, rel: str, dest: Path, size: int | None = None) -> None:
        src = self.root / safe_rel(self.uri, rel)
        if not src.is_file():
            raise NotFoundError(f"{self.uri}: {rel} not found (looked at {src})")
        actual = src.stat().st_size
        if size is not None and actual != size:
            raise SizeError(f"{self.uri}: {rel}: {actual} bytes, but {MANIFEST} records {size}; not copied")
        if actual > self.max_bytes:
            raise SizeError(
                f"{self.uri}: {rel}: {actual} bytes is above the limit of {self.max_bytes} bytes "
                "(KUBEMAAS_MAX_BUNDLE_BYTES); not copied"
            )
        if dest.exists() and os.path.samefile(src, dest):
            return
        _atomic_copy(src, dest, self.uri)

    def put(self, src: Path, rel: str) -> None:
        dest = self.root / safe_rel(self.uri, rel)
        if dest.exists() and os.path.samefile(src, dest):
            return
        _atomic_copy(src, dest, self.uri)


def _atomic_copy(src: Path, dest: Path, uri: str) -> None:
    """Copy beside the target, then rename, so a reader never sees half a file."""
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{uri}: cannot copy {src} to {dest}: {exc.strerror or exc}") from exc
