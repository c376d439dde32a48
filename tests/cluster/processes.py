"""Processes of the test cluster: free loopback ports, process groups that die with the test
process, and log tails."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.cluster.errors import LOG_TAIL_LINES

STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, all distinct (sockets held until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.splitlines()[-lines:])


def die_with_parent() -> None:
    """Runs in the child before exec: if the test process dies (even by SIGKILL), so does this."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Component:
    """One process the harness started: its argv, log file and Popen."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)
