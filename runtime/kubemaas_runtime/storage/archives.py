"""Safe extraction of ``.tar.gz`` bundles: regular files and directories only, no escaping paths."""

from __future__ import annotations

import tarfile
from pathlib import Path

from kubemaas_runtime.bundle import check_relative
from kubemaas_runtime.storage.errors import StorageError


def extract_bundle_archive(archive: Path, dest: Path, uri: str) -> list[str]:
    """Extract ``archive`` into ``dest``; refuse links, devices, absolute paths and ``..``.

    Every member is checked before anything is written, so a refused archive leaves no files.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            names: list[str] = []
            for member in members:
                try:
                    rel = check_relative(member.name)
                except ValueError as exc:
                    raise StorageError(f"{uri}: archive member refused: {exc}") from exc
                if not (member.isfile() or member.isdir()):
                    raise StorageError(
                        f"{uri}: archive member {member.name!r} is not a regular file or directory; refused"
                    )
                if member.isfile():
                    names.append(rel.as_posix())
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
            return names
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StorageError(f"{uri}: not a readable .tar.gz archive: {exc}") from exc
