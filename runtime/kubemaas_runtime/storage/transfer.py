"""``fetch(uri, dest)`` (the storage initializer) and ``upload(src, uri)`` (bundle writers)."""

from __future__ import annotations

from pathlib import Path

from kubemaas_runtime.bundle import MANIFEST, Bundle, BundleError, load_bundle, read_manifest
from kubemaas_runtime.storage.archives import ArchiveLimits, extract_bundle_archive
from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings, load_settings
from kubemaas_runtime.storage.stores import open_store
from kubemaas_runtime.storage.streams import Deadline
from kubemaas_runtime.storage.uris import is_archive, split_archive, unsupported_archive

MANIFEST_MAX_BYTES = 16 << 20
"""A model.json larger than this is refused before it is parsed (real ones are a few KiB)."""


def fetch(uri: str, dest: Path, settings: StorageSettings | None = None) -> Bundle:
    """Copy the bundle at ``uri`` into ``dest`` and verify every checksum of its ``model.json``.

    For a directory-like URI, ``model.json`` is read first and then every file it lists
    (its paths were checked for traversal when the manifest was validated), each with the
    size the manifest records. A URI ending in ``.tar.gz``/``.tgz`` is downloaded and
    extracted safely instead. The whole fetch obeys ``settings.deadline_s``, each download
    ``settings.stall_timeout_s``, and everything written ``settings.max_bundle_bytes``
    (and, for archives, ``settings.max_expansion_ratio``). Raises ``StorageError``.
    """
    settings = settings or load_settings()
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"fetch {uri}: cannot create {dest}: {exc.strerror or exc}") from exc
    deadline = Deadline.start(settings.deadline_s)
    if is_archive(uri):
        _fetch_archive(uri, dest, settings, deadline)
    else:
        _fetch_directory(uri, dest, settings, deadline)
    try:
        return load_bundle(dest)
    except BundleError as exc:
        raise StorageError(f"fetch {uri}: {exc}") from exc


def _fetch_directory(uri: str, dest: Path, settings: StorageSettings, deadline: Deadline) -> None:
    small = settings.model_copy(update={"max_bundle_bytes": MANIFEST_MAX_BYTES})
    try:
        open_store(uri, small, deadline).get(MANIFEST, dest / MANIFEST)
    except NotFoundError as exc:
        suffix = unsupported_archive(uri)
        hint = (f"; {suffix} archives are not extracted, only .tar.gz/.tgz: repack with "
                "`tar czf bundle.tgz -C DIR .`" if suffix else "")
        raise StorageError(f"fetch {uri}: no {MANIFEST} there, so it is not a model bundle ({exc}){hint}") from exc
    try:
        manifest = read_manifest(dest)
    except BundleError as exc:
        (dest / MANIFEST).unlink(missing_ok=True)
        raise StorageError(f"fetch {uri}: {exc}") from exc
    total = sum(entry.size or 0 for entry in manifest.files.values())
    if total > settings.max_bundle_bytes:
        (dest / MANIFEST).unlink(missing_ok=True)
        raise StorageError(
            f"fetch {uri}: {MANIFEST} records {total} bytes in all, above the limit of "
            f"{settings.max_bundle_bytes} bytes (KUBEMAAS_MAX_BUNDLE_BYTES); nothing else was fetched"
        )
    store = open_store(uri, settings, deadline)
    for rel, entry in sorted(manifest.files.items()):
        try:
            store.get(rel, dest / rel, entry.size)
        except NotFoundError as exc:
            raise StorageError(f"fetch {uri}: {rel} is listed in {MANIFEST} but missing ({exc})") from exc
        except StorageError as exc:
            raise StorageError(f"fetch {uri}: {exc}") from exc


def _fetch_archive(uri: str, dest: Path, settings: StorageSettings, deadline: Deadline) -> None:
    parent, name = split_archive(uri)
    archive = dest / f".{name}.download"
    try:
        try:
            open_store(parent, settings, deadline).get(name, archive)
        except NotFoundError as exc:
            raise StorageError(f"fetch {uri}: archive not found ({exc})") from exc
        limits = ArchiveLimits(max_bytes=settings.max_bundle_bytes, max_ratio=settings.max_expansion_ratio)
        extract_bundle_archive(archive, dest, uri, limits)
    finally:
        archive.unlink(missing_ok=True)


def upload(src: Path, uri: str, settings: StorageSettings | None = None) -> str:
    """Copy every file below the local directory ``src`` to ``uri``; ``model.json`` goes last.

    Writing the manifest last means a reader that sees ``model.json`` sees a whole bundle.
    Returns ``uri``.
    """
    src = Path(src)
    if not src.is_dir():
        raise StorageError(f"upload to {uri}: source {src} is not a directory")
    if is_archive(uri):
        raise StorageError(f"upload to {uri}: archive URIs are read-only; give a directory-like URI")
    store = open_store(uri, settings)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.endswith(".part"))
    files.sort(key=lambda p: p.relative_to(src).as_posix() == MANIFEST)
    for path in files:
        store.put(path, path.relative_to(src).as_posix())
    return uri
