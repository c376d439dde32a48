"""Helpers for operator tests: the operator as a real subprocess, and polling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.cluster.harness import ControlPlane

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
KUBEMAAS = Path(sys.executable).with_name("kubemaas")


class OperatorProcess:
    """``kubemaas operator`` as a real process with the control plane's KUBECONFIG.

    ``start()`` waits for kopf's liveness endpoint; ``kill()`` sends SIGKILL (a crash, no
    graceful shutdown) and ``stop()`` SIGTERM. Logs go to a file; ``logs()`` reads it.
    """

    def __init__(
        self,
        plane: ControlPlane,
        log_dir: Path,
        *,
        namespaces: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        verbose: bool = True,
    ) -> None:
        self.plane = plane
        self.log_path = log_dir / "operator.log"
        self.namespaces = list(namespaces)
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.verbose = verbose

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        if self.running:
            return self
        port = _free_port()
        args = [str(KUBEMAAS), "operator", "--liveness", f"http://127.0.0.1:{port}/healthz"]
        if self.verbose:
            args.append("--verbose")
        for ns in self.namespaces:
            args += ["--namespace", ns]
        if not self.namespaces:
            args.append("--all-namespaces")
        env = {**os.environ, **self.plane.env, "KUBEMAAS_SERVING_IMAGE": "kubemaas/kubemaas:test", "KUBEMAAS_TRAINING_IMAGE": "kubemaas/kubemaas:test", **self.extra_env}
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts}: {' '.join(args)}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        log.close()
        url = f"http://127.0.0.1:{port}/healthz"

        def healthy() -> bool:
            if not self.running:
                raise RuntimeError(f"the operator exited with {self.process and self.process.returncode}:\n"
                                   f"{self.logs()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        poll(healthy, timeout=timeout, what="the operator's liveness endpoint", raise_errors=True)
        return self

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-flight, as on a node crash or OOM kill."""
        self._signal(signal.SIGKILL, 10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 20)

    def restart(self) -> OperatorProcess:
        self.kill()
        return self.start()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(
    fn: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "a condition",
    raise_errors: bool = False,
) -> T:
    """Call ``fn`` until it returns something truthy; return that. Raise TimeoutError naming ``what``.

    Exceptions count as "not yet" unless ``raise_errors``; the last one is in the timeout message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:
            if raise_errors:
                raise
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def get_json(plane: ControlPlane, *args: str) -> Any:
    """``kubectl get ... -o json`` parsed; None when not found."""
    proc = plane.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise RuntimeError(f"kubectl get {' '.join(args)} failed: {proc.stderr}")
    return json.loads(proc.stdout)


def condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_pod_status(plane: ControlPlane, namespace: str, pod: str, status: Mapping[str, Any]) -> None:
    """Merge-patch a pod's status through the pods/status subresource (as envtest suites do)."""
    plane.kubectl(
        "patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": dict(status)}),
    )


def set_status(plane: ControlPlane, resource: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch any object's status through its status subresource."""
    plane.kubectl(
        "patch", resource, name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": dict(status)}),
    )


def bind_claims(plane: ControlPlane, namespace: str, claims: Sequence[str], *, reclaim: str = "Delete",
                timeout: float = 90.0) -> list[str]:
    """PVCs ``claims`` in ``namespace``, each pre-bound to a hostPath PV ``<claim>-<namespace>`` and
    waited for until the real PV controller binds them (this control plane has no StorageClass, and
    the scheduler refuses pods with unbound claims). Returns the PV names."""
    docs: list[dict[str, Any]] = []
    volumes = []
    for claim in claims:
        pv = f"{claim}-{namespace}"
        volumes.append(pv)
        docs += [
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                      "persistentVolumeReclaimPolicy": reclaim, "hostPath": {"path": f"/tmp/{pv}"},
                      "claimRef": {"namespace": namespace, "name": claim}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                      "resources": {"requests": {"storage": "1Gi"}}}},
        ]
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))

    def bound() -> bool:
        items = get_json(plane, "pvc", "-n", namespace)["items"]
        return {i["metadata"]["name"] for i in items if i["status"].get("phase") == "Bound"} >= set(claims)

    poll(bound, timeout=timeout, what=f"PVCs {', '.join(claims)} Bound")
    return volumes


def compression_message(bundle: Path, output: Path, *flags: str, exit_code: int) -> str:
    """The termination message a compression pod would leave: runs the real ``kubemaas compress
    --bundle BUNDLE --output OUTPUT FLAGS`` as a process, checks that it exits ``exit_code`` and
    returns what it wrote to its ``KUBEMAAS_TERMINATION_LOG`` (a file beside ``output``)."""
    log = output.parent / f"{output.name}-termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "kubemaas_runtime.cli", "compress", "--bundle", str(bundle),
         "--output", str(output), *flags],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "KUBEMAAS_TERMINATION_LOG": str(log)},
    )
    assert done.returncode == exit_code, done.stderr[-2000:]
    return log.read_text()
