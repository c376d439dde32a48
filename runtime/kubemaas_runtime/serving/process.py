"""Run ``kubemaas serve`` as a local child process: the demo, the tests and the benches use it.

It starts the same console entrypoint a serving pod runs, on a free loopback port, polls
``/v2/health/ready`` with a deadline (never sleep-and-hope), and stops with SIGTERM so the
server drains, falling back to SIGKILL only when it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

READY_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0


class ServeProcessError(RuntimeError):
    """The server exited or was not ready in time; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServeProcess:
    """``kubemaas serve --model-dir DIR`` on 127.0.0.1:<free port>.

    ``env`` adds variables (the ``KUBEMAAS_*`` settings); with ``clean_env`` the caller's own
    ``KUBEMAAS_*`` variables are dropped first so tests see only what they set.
    """

    def __init__(self, model_dir: Path, log: Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, *, clean_env: bool = True,
                 port: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.log = Path(log)
        self.port = port or free_port()
        self._args = list(args)
        base = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("KUBEMAAS_"))}
        self._env = {**base, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The child process; raises if ``start`` was not called."""
        if self.process is None:
            raise ServeProcessError("kubemaas serve was never started")
        return self.process

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> ServeProcess:
        argv = [sys.executable, "-m", "kubemaas_runtime.cli", "serve", "--model-dir", str(self.model_dir),
                "--host", "127.0.0.1", "--port", str(self.port), *self._args]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self._env)
        return self

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        if self.process is None:
            raise ServeProcessError("kubemaas serve was never started")
        deadline = time.monotonic() + deadline_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServeProcessError(f"kubemaas serve exited with {code}:\n{log_tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServeProcessError(f"kubemaas serve not ready after {deadline_s:.0f}s:\n{log_tail(self.log)}")
            time.sleep(0.05)

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``deadline_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
