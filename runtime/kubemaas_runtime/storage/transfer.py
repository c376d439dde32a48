"""``fetch(uri, dest)`` (the storage initializer) and ``upload(src, uri)`` (bundle writers)."""

from __future__ import annotations

from pathlib import Path

from kubemaas_runtime.bundle import MANIFEST, Bundle, BundleError, load_bundle, read_manifest
from kubemaas_runtime.storage.archives import extract_bundle_archive
from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings
from kubemaas_runtime.storage.stores import open_store
from kubemaas_runtime.storage.uris import is_archive, split_archive


def fetch(uri: str, dest: Path, settings: StorageSettings | None = None) -> Bundle:
    """Copy the bundle at ``uri`` into ``dest`` and verify every checksum of its ``model.json``.

    For a directory-like URI, ``model.json`` is read first and then every file it lists
    (its paths were checked for traversal when the manifest was validated). A URI ending
    in ``.tar.gz``/``.tgz`` is downloaded and extracted safely instead.
    """
    settings = settings or StorageSettings()
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"fetch {uri}: cannot create {dest}: {exc.strerror or exc}") from exc
    if is_archive(uri):
        _fetch_archive(uri, dest, settings)
    else:
        _fetch_directory(uri, dest, settings)
    try:
        return load_bundle(dest)
    except BundleError as exc:
        raise StorageError(f"fetch {uri}: {exc}") from exc


def _fetch_directory(uri: str, dest: Path, settings: StorageSettings) -> None:
    store = open_store(uri, settings)
    try:
        store.get(MANIFEST, dest / MANIFEST)
    except NotFoundError as exc:
        raise StorageError(f"fetch {uri}: no {MANIFEST} there, so it is not a model bundle ({exc})") from exc
    try:
        manifest = read_manifest(dest)
    except BundleError as exc:
        (dest / MANIFEST).unlink(missing_ok=True)
        raise StorageError(f"fetch {uri}: {exc}") from exc
    for rel in sorted(manifest.files):
        try:
            store.get(rel, dest / rel)
        except NotFoundError as exc:
            raise StorageError(f"fetch {uri}: {rel} is listed in {MANIFEST} but missing ({exc})") from exc


def _fetch_archive(uri: str, dest: Path, settings: StorageSettings) -> None:
    parent, name = split_archive(uri)
    archive = dest / f".{name}.download"
    try:
        try:
            open_store(parent, settings).get(name, archive)
        except NotFoundError as exc:
            raise StorageError(f"fetch {uri}: archive not found ({exc})") from exc
        extract_bundle_archive(archive, dest, uri)
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
