"""The container termination message: the file Kubernetes reads a container's last word from.

The kubelet bind-mounts a writable file at the container's ``terminationMessagePath``
(default /dev/termination-log, mode 0666) into a /dev that a non-root user cannot write.
So whether the message can be written depends on the FILE when it exists, and on its
directory only when it does not (local runs, where the path is a temporary file).
"""

from __future__ import annotations

import os
from pathlib import Path


def can_write(path: Path) -> bool:
    """True when ``path`` is a writable file, or is absent from a writable directory."""
    if path.exists():
        return os.access(path, os.W_OK)
    return path.parent.is_dir() and os.access(path.parent, os.W_OK)
