"""The errors of the test cluster (tests/cluster/harness.py and node.py): all ControlPlaneError."""

from __future__ import annotations

import subprocess
from pathlib import Path

LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a part of it failed."""


class MissingBinaryError(ControlPlaneError):
    """A binary that build.sh makes is not in the bin directory."""


class StaleDataDirError(ControlPlaneError):
    """The work directory holds state from an earlier run."""


class ComponentError(ControlPlaneError):
    """A component exited, or did not become ready before its deadline."""

    def __init__(self, component: str, problem: str, log_path: Path | None, log_tail: str) -> None:
        self.component = component
        self.problem = problem
        self.log_path = log_path
        self.log_tail = log_tail
        where = f" ({log_path})" if log_path else ""
        super().__init__(
            f"{component}: {problem}\n--- last {LOG_TAIL_LINES} log lines of {component}{where} ---\n"
            f"{log_tail or '(empty log)'}"
        )


class PortInUseError(ComponentError):
    """A component could not bind its port."""


class WaitTimeout(ControlPlaneError, TimeoutError):
    """`ControlPlane.wait_for` ran out of time (with every component still running)."""


class CommandFailed(subprocess.CalledProcessError):
    """kubectl or helm exited non-zero; unlike CalledProcessError, str() shows stderr."""

    def __str__(self) -> str:
        command = " ".join(str(part) for part in self.cmd)
        return f"`{command}` exited {self.returncode}:\n{self.stderr or ''}{self.stdout or ''}".rstrip()
