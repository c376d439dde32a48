"""Safe extraction of ``.tar.gz`` bundles.

Refused: links, devices, FIFOs, absolute paths, ``..``, and bombs: an archive whose members
add up to more than ``max_bytes`` or expand more than ``max_ratio`` times the archive's own
size. Members are checked while their headers are read, so a bomb is refused after reading
headers up to the first member over a limit, and nothing is written for a refused archive.

``tar czf bundle.tgz bundle/`` (one top-level folder, the way most people pack a folder) and
``tar czf bundle.tgz -C bundle .`` both give the bundle at ``dest``; any other layout is
refused with a listing of what the archive holds.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kubemaas_runtime.bundle import MANIFEST, check_relative
from kubemaas_runtime.storage.errors import StorageError

LISTED = 20
"""Archive entries named in the error for an archive that holds no bundle."""


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may extract to."""

    max_bytes: int
    """Total bytes of regular files (``KUBEMAAS_MAX_BUNDLE_BYTES``)."""
    max_ratio: float
    """Extracted bytes per byte of archive (``KUBEMAAS_MAX_EXPANSION_RATIO``)."""


def _scan(tar: tarfile.TarFile, uri: str, compressed: int, limits: ArchiveLimits) -> list[tarfile.TarInfo]:
    """Every member, checked for type, path and the running byte total."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:  # reads one header at a time: a bomb stops the scan early
        try:
            check_relative(member.name)
        except ValueError as exc:
            raise StorageError(f"{uri}: archive member refused: {exc}") from exc
        if not (member.isfile() or member.isdir()) or member.issparse():
            raise StorageError(f"{uri}: archive member {member.name!r} is not a regular file or directory; refused")
        total += member.size if member.isfile() else 0
        if total > limits.max_bytes:
            raise StorageError(
                f"{uri}: archive extracts to more than {limits.max_bytes} bytes (at member {member.name!r}), "
                "the limit KUBEMAAS_MAX_BUNDLE_BYTES; refused"
            )
        if total > limits.max_ratio * compressed:
            raise StorageError(
                f"{uri}: archive of {compressed} bytes extracts to more than {limits.max_ratio:g} times its size "
                f"({total} bytes by member {member.name!r}), the limit KUBEMAAS_MAX_EXPANSION_RATIO; refused"
            )
        members.append(member)
    return members


def _parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    return PurePosixPath(member.name).parts  # "./model.json" -> ("model.json",)


def macos_metadata(name: str) -> bool:
    """``__MACOSX`` and AppleDouble ``._*`` entries, which macOS's tar and zip add beside a folder."""
    return name == "__MACOSX" or name.startswith("._")


def bundle_root(members: list[tarfile.TarInfo], uri: str) -> str | None:
    """None if ``model.json`` is at the archive's root; the folder's name if it is inside a single
    top-level folder (macOS metadata beside it aside); otherwise ``StorageError`` listing the
    archive's files."""
    files = [_parts(m) for m in members if m.isfile()]
    if (MANIFEST,) in files:
        return None
    tops = {parts[0] for m in members if (parts := _parts(m)) and not macos_metadata(parts[0])}
    if len(tops) == 1:
        (top,) = tops
        if (top, MANIFEST) in files:
            return top
    names = sorted("/".join(parts) + ("/" if m.isdir() else "") for m in members if (parts := _parts(m)))
    listing = ", ".join(names[:LISTED]) + (f", ... and {len(names) - LISTED} more" if len(names) > LISTED else "")
    raise StorageError(
        f"{uri}: no {MANIFEST} at the archive's root or inside a single top-level folder, so it holds no "
        f"model bundle; the archive holds: {listing or 'nothing'}"
    )


def extract_bundle_archive(archive: Path, dest: Path, uri: str, limits: ArchiveLimits) -> list[str]:
    """Extract the bundle in ``archive`` into ``dest``; return the relative paths of its files.

    Raises ``StorageError`` naming ``uri`` and the problem (member refused, limit crossed,
    no bundle inside, unreadable archive). Every member is checked before anything is
    written, so a refused archive leaves no files.
    """
    try:
        compressed = archive.stat().st_size
        with tarfile.open(archive, "r:gz") as tar:
            members = _scan(tar, uri, compressed, limits)
            root = bundle_root(members, uri)
            if root is not None:  # strip the folder; what lies beside it (macOS metadata) stays out
                members = [
                    m.replace(name="/".join(parts[1:]), deep=False)
                    for m in members
                    if len(parts := _parts(m)) > 1 and parts[0] == root
                ]
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
            return [PurePosixPath(m.name).as_posix() for m in members if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StorageError(f"{uri}: not a readable .tar.gz archive: {exc}") from exc
