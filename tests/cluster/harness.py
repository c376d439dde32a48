"""A real Kubernetes control plane on loopback, for tests and for `make dev-cluster`.

`ControlPlane` runs the binaries that tests/cluster/build.sh builds from pinned Go
modules: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(which plays the kubelet for one fake Node, `kwok-node-0`). Everything listens on
127.0.0.1 on free ports and lives in a temporary directory; the processes it starts
run in process groups of their own and are stopped by those group ids, never by name.

    with ControlPlane() as cp:
        cp.kubectl("get", "nodes")
        core = kubernetes.client.CoreV1Api(cp.api_client())

Authentication is by static bearer tokens: the admin (`kubemaas-admin`, group
system:masters) in `cp.kubeconfig`, and each component under its bootstrap RBAC
identity. Authorization is RBAC. ServiceAccount tokens are signed with a key the
harness generates, so `kubectl create token` and `--as=system:serviceaccount:...`
checks behave as on a real cluster.

Every wait has a deadline. A component that exits, or a wait that runs out, raises
`ComponentError`, whose message names the component and ends with its last log lines.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.cluster.binaries import (
    APISERVER,
    BINARIES,
    CLUSTER_DIR,
    COMPONENTS,
    CONTROLLER_COMPONENTS,
    CONTROLLER_MANAGER,
    CORE_COMPONENTS,
    ETCD,
    GO_MODULES,
    HELM,
    KUBECTL,
    KWOK,
    SCHEDULER,
    default_bin_dir,
    k8s_version,
    missing_binaries,
    pin_hash,
)
from tests.cluster.certificates import ClusterPki, issue_certificate, write_private
from tests.cluster.errors import (
    LOG_TAIL_LINES,
    CommandFailed,
    ComponentError,
    ControlPlaneError,
    MissingBinaryError,
    PortInUseError,
    StaleDataDirError,
    WaitTimeout,
)
from tests.cluster.kubeconfigs import write_kubeconfig
from tests.cluster.processes import (
    STOP_GRACE_SECONDS,
    Component,
    die_with_parent,
    free_ports,
    port_is_free,
    tail,
)
from tests.cluster.waits import condition, http_get

# The public surface, re-exported from the modules above so that callers keep importing
# everything from tests.cluster.harness.
__all__ = [
    "ADMIN_USER",
    "APISERVER",
    "BINARIES",
    "CLUSTER_DIR",
    "COMPONENTS",
    "CONTROLLER_COMPONENTS",
    "CONTROLLER_MANAGER",
    "CORE_COMPONENTS",
    "CRDS_DIR",
    "ETCD",
    "GO_MODULES",
    "HELM",
    "KUBECTL",
    "KWOK",
    "KWOK_NODE_ALLOCATABLE",
    "KWOK_NODE_ANNOTATION",
    "KWOK_NODE_NAME",
    "LOG_TAIL_LINES",
    "POD_CIDR",
    "REPO_ROOT",
    "SCHEDULER",
    "SERVICE_ACCOUNT_ISSUER",
    "SERVICE_CIDR",
    "STAGES_FILE",
    "STOP_GRACE_SECONDS",
    "CommandFailed",
    "ComponentError",
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinaryError",
    "PortInUseError",
    "StaleDataDirError",
    "WaitTimeout",
    "default_bin_dir",
    "free_ports",
    "k8s_version",
    "missing_binaries",
    "pin_hash",
    "port_is_free",
    "tail",
]

REPO_ROOT = CLUSTER_DIR.parent.parent
CRDS_DIR = REPO_ROOT / "crds"
STAGES_FILE = CLUSTER_DIR / "stages" / "kwok-stages.yaml"

KWOK_NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Room for a few hundred pods with requests; GPUs so that nccl-style pods schedule too.
KWOK_NODE_ALLOCATABLE = {
    "cpu": "256",
    "memory": "1Ti",
    "ephemeral-storage": "1Ti",
    "pods": "500",
    "nvidia.com/gpu": "8",
}
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "kubemaas-admin"


PORT_ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager, kube-scheduler and kwok) on loopback.

    `full=False` starts only etcd and the API server (a few seconds); `start_controllers()`
    adds the rest later on the same API server. CRDs from `crds_dir` (the repository's
    crds/ by default; None for none) are applied at start and waited for until Established.
    """

    def __init__(
        self,
        *,
        full: bool = True,
        bin_dir: Path | None = None,
        work_dir: Path | None = None,
        crds_dir: Path | None = CRDS_DIR,
        api_port: int | None = None,
        timeout: float = 90.0,
        verbosity: int = 1,
        keep_work_dir: bool | None = None,
        node_ip: str | None = None,
    ) -> None:
        self.bin_dir = bin_dir or default_bin_dir()
        # With a node_ip (tests/cluster/node.py's real Node), the API server listens and
        # advertises there instead of on loopback, so that pods reach it through the
        # `kubernetes` Service, and kwok is not started: a real kubelet registers the Node.
        self.node_ip = node_ip
        self.full = full
        self.crds_dir = crds_dir
        self.timeout = timeout
        self.verbosity = verbosity
        # Keep the temporary directory (logs, etcd data) after stop(), for debugging.
        self.keep_work_dir = (
            bool(os.environ.get("KUBEMAAS_KEEP_CLUSTER_DIR")) if keep_work_dir is None else keep_work_dir
        )
        self._requested_api_port = api_port
        self._own_work_dir = work_dir is None
        self._work_dir_arg = work_dir
        self.work_dir = Path()
        self.kubeconfig = Path()
        self.server = ""
        self.env: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._components: dict[str, Component] = {}
        self._tokens: dict[str, str] = {}
        self._ports: dict[str, int] = {}
        self._pki: ClusterPki | None = None
        self._started = False
        self._controllers_started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def controllers_started(self) -> bool:
        return self._controllers_started

    def start(self) -> ControlPlane:
        """Start etcd and the API server (and the controllers if `full`); return self."""
        if self._started:
            return self
        missing = missing_binaries(self.bin_dir, BINARIES if self.full else (*CORE_COMPONENTS, KUBECTL))
        if missing:
            raise MissingBinaryError(
                f"missing {', '.join(missing)} in {self.bin_dir}: run `make cluster-binaries` "
                "(bash tests/cluster/build.sh) to build the pinned control-plane binaries"
            )
        # Free ports are picked, released and only then bound by the components, so another
        # process can take one in between: start again on fresh ports when that happens.
        fixed = self._requested_api_port is not None or self._work_dir_arg is not None
        attempts = 1 if fixed else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            began = time.monotonic()
            atexit.register(self.stop)
            self._started = True
            try:
                self._prepare_work_dir()
                self._start_etcd()
                self._start_apiserver()
                self.timings["apiserver_ready_s"] = time.monotonic() - began
                if self.full:
                    self.start_controllers()
                if self.crds_dir is not None:
                    self.apply_crds(self.crds_dir)
                self.timings["total_s"] = time.monotonic() - began
                return self
            except PortInUseError:
                self.stop()
                if attempt == attempts:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def start_controllers(self) -> None:
        """Start kube-controller-manager, kube-scheduler and kwok, register the kwok Node, and
        wait until the Node is Ready and the default ServiceAccount exists. Idempotent."""
        if self._controllers_started:
            return
        if not self._started:
            raise ControlPlaneError("start() the control plane before start_controllers()")
        missing = missing_binaries(self.bin_dir, CONTROLLER_COMPONENTS)
        if missing:
            raise MissingBinaryError(
                f"missing {', '.join(missing)} in {self.bin_dir}: run `make cluster-binaries`"
            )
        began = time.monotonic()
        self._controllers_started = True
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_controllers_once()
                break
            except BaseException as error:
                for name in reversed(CONTROLLER_COMPONENTS):
                    component = self._components.pop(name, None)
                    if component is not None:
                        self._stop_component(component)
                if not isinstance(error, PortInUseError) or attempt == PORT_ATTEMPTS:
                    self._controllers_started = False
                    raise
                self._ports.update(zip((CONTROLLER_MANAGER, SCHEDULER), free_ports(2), strict=True))
        self.timings["controllers_ready_s"] = time.monotonic() - began

    def _start_controllers_once(self) -> None:
        self._start_controller_manager()
        self._start_scheduler()
        if self.node_ip is None:
            self._start_kwok()
            self._register_kwok_node()
        self._wait_healthz(CONTROLLER_MANAGER)
        self._wait_healthz(SCHEDULER)
        if self.node_ip is not None:
            self._wait(
                CONTROLLER_MANAGER,
                "the ServiceAccount default/default (serviceaccount controller)",
                lambda: self._get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            )
            return
        self._wait(
            KWOK,
            f"kwok to mark Node {KWOK_NODE_NAME} Ready",
            lambda: condition(self._get_json(f"/api/v1/nodes/{KWOK_NODE_NAME}"), "Ready") == "True",
        )
        self._wait(
            CONTROLLER_MANAGER,
            "the ServiceAccount default/default (serviceaccount controller)",
            lambda: self._get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )

    def stop(self) -> None:
        """Stop every process this object started (by process group), newest first. Idempotent."""
        for component in reversed(list(self._components.values())):
            self._stop_component(component)
        self._components.clear()
        if self._started and self._own_work_dir and not self.keep_work_dir and self.work_dir != Path():
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self._started = False
        self._controllers_started = False
        atexit.unregister(self.stop)

    # -- public helpers ------------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane as the admin."""
        return self._run(
            [str(self.bin_dir / KUBECTL), "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            input=input,
            timeout=timeout,
        )

    def helm(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm against this control plane as the admin (own cache/config dirs)."""
        return self._run(
            [str(self.bin_dir / HELM), "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            input=input,
            timeout=timeout,
        )

    @property
    def ca_cert(self) -> Path:
        """The cluster CA's certificate (PEM); it also signs client certificates the API server accepts."""
        assert self._pki is not None, "start() first"
        return self._pki.ca_cert

    @property
    def ca_key(self) -> Path:
        """The cluster CA's private key (PEM), for issuing node and client certificates."""
        assert self._pki is not None, "start() first"
        return self._pki.ca_key

    def api_client(self) -> k8s_client.ApiClient:
        """A new kubernetes.client.ApiClient authenticated as the admin."""
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def token(self, user: str = ADMIN_USER) -> str:
        """The static bearer token of `user` (the admin by default)."""
        return self._tokens[user]

    def logs(self, component: str) -> str:
        """Everything `component` has written to stdout/stderr so far."""
        try:
            return self._components[component].log_path.read_text(errors="replace")
        except KeyError:
            raise ControlPlaneError(
                f"no component {component!r} was started; started: {', '.join(self._components) or 'none'}"
            ) from None
        except FileNotFoundError:
            return ""

    def pid(self, component: str) -> int:
        """Process id (and process-group id) of `component`."""
        process = self._components[component].process
        if process is None:
            raise ControlPlaneError(f"{component} has no process")
        return process.pid

    def check_alive(self) -> None:
        """Raise ComponentError for the first started component that has exited."""
        for component in self._components.values():
            if component.process is not None and component.process.poll() is not None:
                raise self._error(component.name, f"exited with code {component.process.returncode}")

    def apply_crds(self, directory: Path | None = None) -> list[str]:
        """`kubectl apply` every *.yaml/*.yml in `directory` (default: crds/) and wait until each
        CustomResourceDefinition in them is Established. Returns the CRD names."""
        directory = directory or self.crds_dir or CRDS_DIR
        files = (
            sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml"))
            if directory.is_dir()
            else []
        )
        if not files:
            return []
        names: list[str] = []
        for path in files:
            for document in yaml.safe_load_all(path.read_text()):
                if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                    names.append(str(document["metadata"]["name"]))
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=kubemaas-tests"]
        for path in files:
            args += ["-f", str(path)]
        self.kubectl(*args)
        for name in names:
            self._wait(
                APISERVER, f"CustomResourceDefinition {name} to be Established", self._established(name)
            )
        return names

    def _established(self, crd: str) -> Callable[[], bool]:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"
        return lambda: condition(self._get_json(path), "Established") == "True"

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll `predicate` until it returns True; on timeout (or a component dying) raise,
        naming `what`. Exceptions from the predicate count as "not yet".

        Raises WaitTimeout on timeout, or ComponentError (with that component's log tail)
        as soon as any component of the control plane has exited."""
        self._wait(None, what, predicate, timeout=timeout)

    # -- internals: processes --------------------------------------------------------------------

    def _prepare_work_dir(self) -> None:
        if self._work_dir_arg is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="kubemaas-cp-"))
        else:
            self.work_dir = self._work_dir_arg.resolve()
            etcd_dir = self.work_dir / "etcd"
            if etcd_dir.exists() and any(etcd_dir.iterdir()):
                raise StaleDataDirError(
                    f"{etcd_dir} holds etcd data from an earlier run; remove {self.work_dir} "
                    "or pass another work_dir (the harness always starts from an empty cluster)"
                )
            self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        self._pki = ClusterPki.create(
            self.work_dir / "pki", [self.node_ip] if self.node_ip else [], SERVICE_CIDR
        )

        names = ("etcd-client", "etcd-peer", APISERVER, CONTROLLER_MANAGER, SCHEDULER)
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        if self._requested_api_port is not None:
            if not port_is_free(self._requested_api_port):
                raise PortInUseError(
                    APISERVER, f"port 127.0.0.1:{self._requested_api_port} is already in use", None, ""
                )
            ports[APISERVER] = self._requested_api_port
        self._ports = ports
        self.server = f"https://{self.node_ip or '127.0.0.1'}:{ports[APISERVER]}"

        identities = {
            ADMIN_USER: "system:masters",
            "system:kube-controller-manager": "",
            "system:kube-scheduler": "",
            "kwok-controller": "system:masters",
        }
        self._tokens = {user: os.urandom(24).hex() for user in identities}
        lines = [f'{self._tokens[user]},{user},{user},"{groups}"' for user, groups in identities.items()]
        write_private(self.work_dir / "tokens.csv", ("\n".join(lines) + "\n").encode())
        self.kubeconfig = self._write_kubeconfig("kubeconfig", ADMIN_USER)

        helm_home = self.work_dir / "helm"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def _write_kubeconfig(self, name: str, user: str) -> Path:
        assert self._pki is not None
        return write_kubeconfig(
            self.work_dir / name,
            server=self.server,
            ca_cert=self._pki.ca_cert,
            user=user,
            token=self._tokens[user],
        )

    def _spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Component:
        component = Component(name, [str(self.bin_dir / name), *args], self.work_dir / "logs" / f"{name}.log")
        self._components[name] = component
        component.log_file = component.log_path.open("ab")
        component.process = subprocess.Popen(
            component.argv,
            stdin=subprocess.DEVNULL,
            stdout=component.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            env={**{key: value for key, value in os.environ.items() if key != "KUBECONFIG"}, **(env or {})},
            start_new_session=True,  # its own process group, which stop() signals
            preexec_fn=die_with_parent,
        )
        return component

    def _stop_component(self, component: Component) -> None:
        process = component.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_SECONDS)
        if component.log_file is not None:
            component.log_file.close()
            component.log_file = None

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self._ports['etcd-client']}"
        peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
        self._spawn(
            ETCD,
            [
                "--name=kubemaas",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kubemaas={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throw-away data: as envtest does, trade durability for speed
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._wait(ETCD, "etcd /health", lambda: b'"true"' in http_get(f"{client}/health"))

    def _start_apiserver(self) -> None:
        assert self._pki is not None
        pki = self._pki
        if self.node_ip is None:
            # The `kubernetes` Service would get 127.0.0.1 as its endpoint, which
            # Endpoints validation rejects (loopback); nothing in-cluster dials it here.
            address, node_args = "127.0.0.1", ["--endpoint-reconciler-type=none"]
        else:
            address = self.node_ip
            client_cert, client_key = issue_certificate(
                pki.ca_cert,
                pki.ca_key,
                self.work_dir / "pki" / "apiserver-kubelet-client",
                common_name="kube-apiserver-kubelet-client",
                organization="system:masters",
                client=True,
            )
            node_args = [
                f"--kubelet-client-certificate={client_cert}",
                f"--kubelet-client-key={client_key}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        self._spawn(
            APISERVER,
            [
                f"--etcd-servers=http://127.0.0.1:{self._ports['etcd-client']}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                *node_args,
                f"--secure-port={self._ports[APISERVER]}",
                f"--cert-dir={self.work_dir / 'apiserver'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={self.work_dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                f"--v={self.verbosity}",
            ],
        )
        self._wait(
            APISERVER,
            "kube-apiserver /readyz",
            lambda: (
                http_get(f"{self.server}/readyz", token=self._tokens[ADMIN_USER], context=self._ssl_context())
                == b"ok"
            ),
        )

    def _component_kubeconfig_args(self, user: str) -> list[str]:
        path = self._write_kubeconfig(f"{user.removeprefix('system:')}.kubeconfig", user)
        return [
            f"--kubeconfig={path}",
            f"--authentication-kubeconfig={path}",
            f"--authorization-kubeconfig={path}",
        ]

    def _start_controller_manager(self) -> None:
        assert self._pki is not None
        self._spawn(
            CONTROLLER_MANAGER,
            [
                *self._component_kubeconfig_args("system:kube-controller-manager"),
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports[CONTROLLER_MANAGER]}",
                f"--cert-dir={self.work_dir / 'kube-controller-manager'}",
                "--leader-elect=false",
                "--controllers=*",  # every controller that is on by default, as in a real cluster
                "--use-service-account-credentials=true",  # each controller under its own RBAC identity
                f"--service-account-private-key-file={self._pki.sa_key}",
                f"--root-ca-file={self._pki.ca_cert}",
                f"--cluster-signing-cert-file={self._pki.ca_cert}",
                f"--cluster-signing-key-file={self._pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                f"--v={self.verbosity}",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            SCHEDULER,
            [
                *self._component_kubeconfig_args("system:kube-scheduler"),
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports[SCHEDULER]}",
                f"--cert-dir={self.work_dir / 'kube-scheduler'}",
                "--leader-elect=false",
                f"--v={self.verbosity}",
            ],
        )

    def _start_kwok(self) -> None:
        kubeconfig = self._write_kubeconfig("kwok.kubeconfig", "kwok-controller")
        self._spawn(
            KWOK,
            [
                f"--kubeconfig={kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                # No --node-port/--server-address: kwok's kubelet-API server (logs, exec) stays off.
            ],
            # kwok also loads ~/.kwok/kwok.yaml when it exists; a developer's own must not leak in.
            env={"HOME": str(self.work_dir / "kwok-home")},
        )

    def _register_kwok_node(self) -> None:
        """Register the fake Node as kwok's docs show; kwok takes it over by the annotation."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": KWOK_NODE_NAME,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": KWOK_NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                },
            },
            "status": {"allocatable": KWOK_NODE_ALLOCATABLE, "capacity": KWOK_NODE_ALLOCATABLE},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

    def _wait_healthz(self, name: str) -> None:
        insecure = ssl.create_default_context()
        # The component's serving certificate is self-signed in its --cert-dir; this probe is
        # only a liveness check on loopback.
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self._ports[name]}/healthz"
        self._wait(name, f"{name} {url}", lambda: http_get(url, context=insecure) == b"ok")

    # -- internals: waiting and errors -----------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._pki is not None
        return ssl.create_default_context(cafile=str(self._pki.ca_cert))

    def _get_json(self, path: str) -> dict[str, Any] | None:
        """GET `path` from the API server as the admin; None on 404."""
        try:
            body = http_get(
                f"{self.server}{path}", token=self._tokens[ADMIN_USER], context=self._ssl_context()
            )
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        result: dict[str, Any] = json.loads(body)
        return result

    def _wait(
        self, component: str | None, what: str, predicate: Callable[[], bool], timeout: float | None = None
    ) -> None:
        """Poll; on timeout blame `component` (with its log tail), or raise WaitTimeout if None."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.check_alive()
            try:
                if predicate():
                    return
            except Exception as error:  # not ready yet; shown if the deadline passes
                last_error = error
            if time.monotonic() >= deadline:
                problem = f"timed out after {timeout:.0f}s waiting for {what}"
                if last_error:
                    problem += f" (last error: {last_error})"
                if component is None:
                    raise WaitTimeout(problem)
                raise self._error(component, problem)
            time.sleep(0.1)

    def _raise_if_dead(self, cause: BaseException) -> None:
        """A command failed or hung: blame a component that has exited, if there is one."""
        try:
            self.check_alive()
        except ComponentError as dead:
            raise dead from cause

    def _error(self, name: str, problem: str) -> ComponentError:
        component = self._components.get(name)
        log = self.logs(name) if component else ""
        log_path = component.log_path if component else None
        if "address already in use" in log:
            return PortInUseError(name, f"{problem}: a port it needs is already in use", log_path, tail(log))
        return ComponentError(name, problem, log_path, tail(log))

    def _run(
        self, argv: list[str], *, check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        if not self._started:
            raise ControlPlaneError("the control plane is not running; call start() first")
        try:
            result = subprocess.run(
                argv, input=input, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as timed_out:
            self._raise_if_dead(cause=timed_out)
            raise
        if check and result.returncode != 0:
            failed = CommandFailed(result.returncode, argv, result.stdout, result.stderr)
            self._raise_if_dead(cause=failed)
            raise failed
        return result
