"""A real Kubernetes Node on this machine, for `make e2e`: containerd + runc, a kubelet,
CNI bridge networking, kube-proxy (iptables) and CoreDNS, joined to a `ControlPlane`.

    node = RealNode(pause_image="localhost/kubemaas/pause:abc").start()  # the bridge first
    cp = ControlPlane(node_ip=NODE_IP).start()  # the API server listens on the bridge
    try:
        node.join(cp)  # containerd, kubelet, kube-proxy, CoreDNS; the Node is Ready
        node.import_images(["localhost/kubemaas/serving:abc"])
        cp.kubectl("run", ...)
    finally:
        node.stop()  # deletes the pods while the API server still runs
        cp.stop()

What it sets up, and removes again in `stop()` (newest first):

- a Linux bridge `kubemaas0` with the node's address NODE_IP (the pods' gateway); the
  API server listens there too, so pods reach it through the `kubernetes` Service;
- sysctls net.ipv4.ip_forward and net.bridge.bridge-nf-call-ip(6)tables = 1, and the
  ones the kubelet changes (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops):
  every one is read first and written back afterwards;
- containerd (root in the user cache, so imported images survive between runs; state,
  socket and CNI config in a temporary directory) with runc and cgroupfs;
- the kubelet (cgroupDriver cgroupfs, failCgroupV1 false: this machine has cgroup v1),
  with a serving certificate from the cluster CA so `kubectl logs/exec/port-forward` work;
- kube-proxy in iptables mode and CoreDNS (kubernetes plugin, no forwarding: pods only
  resolve cluster names) listening on NODE_IP, which is the kubelet's clusterDNS;
- iptables: every table is saved before and restored after, so the KUBE-* and CNI-*
  chains go away; network namespaces containerd made (/var/run/netns/cni-*) are removed.

Everything runs as root: `preflight()` lists what is missing (not root, packages, Go
binaries, kernel features) without changing anything. Processes run in their own
process groups and are stopped by those ids, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from tests.cluster.certificates import issue_certificate
from tests.cluster.harness import (
    CLUSTER_DIR,
    POD_CIDR,
    ControlPlane,
    ControlPlaneError,
    WaitTimeout,
    free_ports,
    tail,
)
from tests.cluster.kubeconfigs import CLUSTER as KUBECONFIG_CONTEXT
from tests.cluster.kubeconfigs import write_kubeconfig
from tests.cluster.processes import die_with_parent

NODE_NAME = "kubemaas-node-0"
BRIDGE = "kubemaas0"
NODE_IP = "10.244.0.1"
NODE_POD_SUBNET = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/var/run/netns")
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
COREDNS = "coredns"
CONTAINERD = "containerd"
NODE_BINARIES = (KUBELET, KUBE_PROXY, COREDNS)
NODE_GO_MODULES = ("k8s-node", "coredns")
# Debian packages (bookworm) that provide what the node runs besides our Go binaries.
APT_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "podman",
    "buildah",
    "mmdebstrap",
    "catatonit",
)
COMMANDS = {  # command -> the package that provides it
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "iptables-restore": "iptables",
    "ip6tables-save": "iptables",
    "ip6tables-restore": "iptables",
    "ip": "iproute2",
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
}
# Kernel settings this node writes, or the kubelet writes (protectKernelDefaults=false).
SYSCTLS_SET = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}
SYSCTLS_KUBELET = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
IPTABLES = ("iptables", "ip6tables")
STOP_GRACE_SECONDS = 15.0
OWN_IMAGES = "localhost/kubemaas/"  # what tests/cluster/images.sh builds


def node_bin_dir() -> Path:
    """Where `bash tests/cluster/build.sh --node` puts kubelet, kube-proxy and coredns."""
    out = subprocess.run(
        ["bash", str(CLUSTER_DIR / "build.sh"), "--node", "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Path(out.stdout.strip())


def preflight(bin_dir: Path | None = None) -> list[str]:
    """What this machine lacks to host the real Node, one line each; [] when nothing.

    Reads only: the effective uid, PATH, the node binaries, /proc/sys and cgroup mounts.
    """
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"not root (uid {os.geteuid()}): containerd, the kubelet and CNI need root")
    missing = sorted({pkg for cmd, pkg in COMMANDS.items() if shutil.which(cmd) is None})
    if missing:
        problems.append(f"missing Debian packages: {' '.join(missing)} (apt-get install {' '.join(missing)})")
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not (CNI_BIN_DIR / plugin).is_file():
            problems.append(
                f"missing CNI plugin {CNI_BIN_DIR / plugin} (apt-get install containernetworking-plugins)"
            )
    bin_dir = bin_dir or node_bin_dir()
    absent = [name for name in NODE_BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if absent:
        problems.append(f"missing {', '.join(absent)} in {bin_dir} (bash tests/cluster/build.sh --node)")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append("the kernel has no br_netfilter (/proc/sys/net/bridge is absent)")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no cgroup memory controller under /sys/fs/cgroup")
    return problems


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 120.0, input: bytes | None = None
) -> str:
    done = subprocess.run(list(argv), capture_output=True, input=input, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise ControlPlaneError(
            f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout.decode(errors="replace")


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)


class RealNode:
    """One real Node (`kubemaas-node-0`): `start()` prepares the host network, `join(cp)`
    runs the node's processes against a `ControlPlane(node_ip=NODE_IP)` started after it.

    `containerd_root` keeps images between runs (default: the user cache); everything
    else lives in a temporary directory removed by `stop()`. Timeouts are in seconds.
    Raises ControlPlaneError (a ComponentError naming the process, with its log tail,
    when one dies) if the node does not come up.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        containerd_root: Path | None = None,
        pause_image: str,
        timeout: float = 120.0,
    ) -> None:
        self._cp: ControlPlane | None = None
        self.bin_dir = bin_dir or node_bin_dir()
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubemaas"
        self.containerd_root = containerd_root or cache / "containerd"
        self.pause_image = pause_image
        self.timeout = timeout
        self.work_dir = Path()
        self.socket = Path()
        self.timings: dict[str, float] = {}
        self._procs: dict[str, _Process] = {}
        self._sysctls: dict[str, str] = {}
        self._iptables: dict[str, str] = {}
        self._netns_before: set[str] = set()
        self._bridge_made = False
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def cp(self) -> ControlPlane:
        """The control plane this node joined."""
        if self._cp is None:
            raise ControlPlaneError("join(control_plane) first")
        return self._cp

    def start(self) -> RealNode:
        """Save the host's sysctls, iptables and netns list; make the bridge with NODE_IP. Returns self."""
        problems = preflight(self.bin_dir)
        if problems:
            raise ControlPlaneError("this machine cannot host the real Node:\n- " + "\n- ".join(problems))
        self._started = True
        try:
            # Short: unix socket paths must stay under 108 bytes.
            self.work_dir = Path(
                tempfile.mkdtemp(prefix="kmn-", dir="/run" if os.access("/run", os.W_OK) else None)
            )
            (self.work_dir / "logs").mkdir()
            self.socket = self.work_dir / "containerd.sock"
            self._clear_stale_node()
            self._save_host_state()
            self._setup_network()
            return self
        except BaseException:
            self.stop()
            raise

    def join(self, control_plane: ControlPlane) -> RealNode:
        """Start containerd, the kubelet, kube-proxy and CoreDNS against `control_plane` (started
        with node_ip=NODE_IP after start()); wait until the Node is Ready. Returns self."""
        if not self._started:
            raise ControlPlaneError("start() the node (its network) before join()")
        if control_plane.node_ip != NODE_IP:
            raise ControlPlaneError(
                f"start the ControlPlane with node_ip={NODE_IP!r}, got {control_plane.node_ip!r}"
            )
        self._cp = control_plane
        began = time.monotonic()
        try:
            self._start_containerd()
            self._clean_containerd()
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns()
            self.cp.wait_for(f"Node {NODE_NAME} Ready", self._node_ready, timeout=self.timeout)
            self.timings["node_ready_s"] = time.monotonic() - began
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove the pods' containers, stop every process, restore the host. Idempotent;
        each step runs even when an earlier one failed."""
        if not self._started:
            return
        self._started = False
        steps = [
            self._stop_workloads,
            lambda: self._stop_process(COREDNS),
            lambda: self._stop_process(KUBE_PROXY),
            lambda: self._stop_process(KUBELET),
            self._clean_containerd,
            lambda: self._stop_process(CONTAINERD),
            self._remove_netns,
            self._restore_iptables,
            self._remove_bridge,
            self._unmount_work_dir,
            self._restore_sysctls,
            self._remove_kubepods_cgroups,
        ]
        errors: list[str] = []
        for step in steps:
            try:
                step()
            except Exception as error:  # keep tearing down; report at the end
                errors.append(f"{getattr(step, '__name__', 'step')}: {error}")
        if self.work_dir != Path():
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if errors:
            raise ControlPlaneError("real node teardown was incomplete:\n- " + "\n- ".join(errors))

    # -- public helpers ---------------------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 600.0, input: bytes | None = None) -> str:
        """Run `ctr` in containerd's k8s.io namespace (the one the kubelet's CRI uses)."""
        return _run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            timeout=timeout,
            input=input,
        )

    def images(self) -> set[str]:
        """References of the images containerd has in the k8s.io namespace."""
        return {line.strip() for line in self.ctr("images", "ls", "-q").splitlines() if line.strip()}

    def import_images(self, refs: Iterable[str]) -> dict[str, float]:
        """Copy podman images into containerd (`podman save` docker-archive | `ctr import`),
        skipping those already there. Returns seconds per imported reference."""
        refs = list(refs)
        have = self.images()
        # Older builds of our images only fill the disk: drop them BEFORE importing, and wait for
        # containerd's GC (--sync), so the disk never holds two training images (6.6 GB each,
        # twice over: the layer blobs and their unpacked snapshots) at once.
        for stale in sorted(ref for ref in have - set(refs) if ref.startswith(OWN_IMAGES)):
            self.ctr("images", "rm", "--sync", stale)
        took: dict[str, float] = {}
        for ref in refs:
            if ref in have:
                continue
            began = time.monotonic()
            save = subprocess.Popen(
                [
                    "podman",
                    "--runtime",
                    "runc",
                    "--cgroup-manager",
                    "cgroupfs",
                    "--events-backend",
                    "file",
                    "save",
                    "--format",
                    "docker-archive",
                    ref,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert save.stdout is not None
            load = subprocess.run(
                [
                    "ctr",
                    "--address",
                    str(self.socket),
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    "--no-unpack=false",
                    "--snapshotter",
                    "overlayfs",
                    "-",
                ],
                stdin=save.stdout,
                capture_output=True,
                timeout=1800,
                check=False,
            )
            save.stdout.close()
            save_err = save.stderr.read().decode(errors="replace") if save.stderr else ""
            if save.wait(timeout=60) != 0 or load.returncode != 0:
                raise ControlPlaneError(
                    f"importing {ref} into containerd failed: podman save: {save_err.strip()}; "
                    f"ctr import: {load.stderr.decode(errors='replace').strip()}"
                )
            took[ref] = time.monotonic() - began
        now = self.images()
        missing = [ref for ref in refs if ref not in now]
        if missing:
            raise ControlPlaneError(f"containerd lacks {missing} after import")
        return took

    def logs(self, name: str) -> str:
        """What process `name` (containerd, kubelet, kube-proxy, coredns) has logged so far."""
        proc = self._procs.get(name)
        return proc.log_path.read_text(errors="replace") if proc and proc.log_path.exists() else ""

    def check_alive(self) -> None:
        """Raise ControlPlaneError naming the first node process that has exited."""
        for proc in self._procs.values():
            if proc.process is not None and proc.process.poll() is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.process.returncode}; last lines of {proc.log_path}:\n"
                    + tail(self.logs(proc.name))
                )

    # -- host state -------------------------------------------------------------------------

    def _save_host_state(self) -> None:
        for name in (*SYSCTLS_SET, *SYSCTLS_KUBELET):
            self._sysctls[name] = _sysctl_path(name).read_text().strip()
        for tool in IPTABLES:
            self._iptables[tool] = _run([f"{tool}-save"])
        self._netns_before = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()

    def _restore_sysctls(self) -> None:
        for name, value in self._sysctls.items():
            path = _sysctl_path(name)
            if path.read_text().strip() != value:
                path.write_text(value + "\n")

    def _restore_iptables(self) -> None:
        """Flush every table now present, then load the saved rules back."""
        for tool, saved in self._iptables.items():
            current = _run([f"{tool}-save"], check=False)
            for table in {line[1:].strip() for line in current.splitlines() if line.startswith("*")}:
                _run([tool, "-t", table, "-F"], check=False)
                _run([tool, "-t", table, "-X"], check=False)
            if saved.strip():
                _run([f"{tool}-restore"], input=saved.encode())

    def _clear_stale_node(self) -> None:
        """Remove what a real node of an earlier, killed run left: its bridge and kube-proxy's
        iptables rules. Refuses while another real node's kubelet is alive."""
        if not _run(["ip", "link", "show", BRIDGE], check=False).strip():
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"/kubelet") and any(b"/kmn-" in arg for arg in argv):
                raise ControlPlaneError(
                    f"another real node is running (kubelet pid {entry.name}) and owns bridge {BRIDGE}"
                )
        _run(["ip", "link", "delete", BRIDGE], check=False)
        _run([str(self.bin_dir / KUBE_PROXY), "--cleanup"], check=False, timeout=60)

    def _setup_network(self) -> None:
        for name, value in SYSCTLS_SET.items():
            _sysctl_path(name).write_text(value + "\n")
        if _run(["ip", "link", "show", BRIDGE], check=False).strip():
            raise ControlPlaneError(f"a bridge {BRIDGE} already exists (a real node from an earlier run?)")
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self._bridge_made = True
        prefix = NODE_POD_SUBNET.split("/")[1]
        _run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        conf = self.work_dir / "cni" / "net.d"
        conf.mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "kubemaas",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # pods talk to each other and to the node, never beyond
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": NODE_POD_SUBNET, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.work_dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf / "10-kubemaas.conflist").write_text(json.dumps(conflist, indent=2))

    def _remove_bridge(self) -> None:
        if self._bridge_made:
            _run(["ip", "link", "delete", BRIDGE], check=False)
            self._bridge_made = False

    def _remove_netns(self) -> None:
        if not NETNS_DIR.is_dir():
            return
        for name in set(os.listdir(NETNS_DIR)) - self._netns_before:
            if name.startswith("cni-"):
                _run(["umount", str(NETNS_DIR / name)], check=False)
                with contextlib.suppress(OSError):
                    (NETNS_DIR / name).unlink()

    def _unmount_work_dir(self) -> None:
        """Unmount whatever the kubelet or containerd left mounted below our directories."""
        roots = [str(self.work_dir)]
        mounts: list[str] = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == r or point.startswith(r + "/") for r in roots):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            _run(["umount", "-l", point], check=False)

    def _remove_kubepods_cgroups(self) -> None:
        """rmdir the kubelet's (now empty) kubepods cgroups, deepest first, in every hierarchy."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / "kubepods"
            if not top.is_dir():
                continue
            for directory in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.work_dir / "logs" / f"{name}.log")
        self._procs[name] = proc
        proc.log_file = proc.log_path.open("ab")
        proc.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=proc.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed test process takes the node with it
        )
        return proc

    def _stop_process(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.process is None:
            return
        if proc.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.process.pid, signal.SIGTERM)
            try:
                proc.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait(timeout=STOP_GRACE_SECONDS)
        if proc.log_file is not None:
            proc.log_file.close()

    def _wait(self, what: str, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        last: Exception | None = None
        while True:
            self.check_alive()
            try:
                if predicate():
                    return
            except Exception as error:  # not yet
                last = error
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"timed out waiting for {what}" + (f" (last error: {last})" if last else "")
                )
            time.sleep(0.2)

    def _kubeconfig(self, name: str, common_name: str, organization: str | None) -> Path:
        cert, key = issue_certificate(
            self.cp.ca_cert,
            self.cp.ca_key,
            self.work_dir / "pki" / name,
            common_name=common_name,
            organization=organization,
            client=True,
        )
        return write_kubeconfig(
            self.work_dir / f"{name}.kubeconfig",
            server=self.cp.server,
            ca_cert=self.cp.ca_cert,
            user=common_name,
            client_cert=cert,
            client_key=key,
        )

    def _start_containerd(self) -> None:
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        state = self.work_dir / "containerd-state"
        config = f"""version = 2
root = "{self.containerd_root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.work_dir / "containerd-ttrpc.sock"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.containerd_root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  # No CAP_SYS_RESOURCE in this sandbox: never raise a container's oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc")}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.work_dir / "cni" / "net.d"}"
    max_conf_num = 1
"""
        path = self.work_dir / "containerd.toml"
        path.write_text(config)
        self._spawn(
            CONTAINERD, [shutil.which(CONTAINERD) or CONTAINERD, "--config", str(path), "--log-level", "warn"]
        )
        self._wait("containerd's socket", lambda: bool(self.ctr("version", timeout=5)))

    def _clean_containerd(self) -> None:
        """Kill and remove every container in k8s.io (from an earlier, interrupted run, or left
        by the kubelet); images stay."""
        if CONTAINERD not in self._procs:
            return
        for task in self.ctr("tasks", "ls", "-q").split():
            _run(
                [
                    "ctr",
                    "--address",
                    str(self.socket),
                    "-n",
                    "k8s.io",
                    "tasks",
                    "kill",
                    "-s",
                    "SIGKILL",
                    task,
                ],
                check=False,
            )
        deadline = time.monotonic() + 30
        while self.ctr("tasks", "ls", "-q").split() and time.monotonic() < deadline:
            for task in self.ctr("tasks", "ls", "-q").split():
                _run(
                    ["ctr", "--address", str(self.socket), "-n", "k8s.io", "tasks", "delete", "-f", task],
                    check=False,
                )
            time.sleep(0.2)
        for container in self.ctr("containers", "ls", "-q").split():
            _run(
                ["ctr", "--address", str(self.socket), "-n", "k8s.io", "containers", "delete", container],
                check=False,
            )

    def _start_kubelet(self) -> None:
        cert, key = issue_certificate(
            self.cp.ca_cert,
            self.cp.ca_key,
            self.work_dir / "pki" / "kubelet-serving",
            common_name=NODE_NAME,
            server_names=[NODE_IP, NODE_NAME],
        )
        kubeconfig = self._kubeconfig("kubelet", f"system:node:{NODE_NAME}", "system:masters")
        port, healthz = free_ports(2)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,  # this machine mounts cgroup v1
            "failSwapOn": False,
            "address": NODE_IP,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.cp.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},  # only the API server holds a client cert
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "/etc/resolv.conf",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "maxPods": 110,
            "protectKernelDefaults": False,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": True,
        }
        path = self.work_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(
            KUBELET,
            [
                str(self.bin_dir / KUBELET),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.work_dir / 'kubelet'}",
                f"--cert-dir={self.work_dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._kubeconfig("kube-proxy", "system:kube-proxy", None)
        healthz, metrics = free_ports(2)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Leave the host's conntrack sysctls and route_localnet alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = self.work_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(KUBE_PROXY, [str(self.bin_dir / KUBE_PROXY), f"--config={path}", "--v=1"])

    def _start_coredns(self) -> None:
        kubeconfig = self._kubeconfig("coredns", "kubemaas:coredns", "system:masters")
        corefile = f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{free_ports(1)[0]}
    ready 127.0.0.1:{free_ports(1)[0]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {KUBECONFIG_CONTEXT}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
}}
"""
        path = self.work_dir / "Corefile"
        path.write_text(corefile)
        self._spawn(COREDNS, [str(self.bin_dir / COREDNS), "-conf", str(path)])

    def _node_ready(self) -> bool:
        out = self.cp.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.returncode == 0 and out.stdout.strip() == "True"

    def _stop_workloads(self) -> None:
        """Delete every pod (grace 0) while the kubelet still runs, so that it stops their
        sandboxes through CNI (veths and IPs released); wait until containerd runs none."""
        if KUBELET not in self._procs or self._cp is None or not self._cp.started:
            return
        # Owners first, or their controllers would make new pods.
        self.cp.kubectl(
            "delete",
            "deployments,replicasets,statefulsets,daemonsets,jobs,pods",
            "--all",
            "--all-namespaces",
            "--grace-period=0",
            "--force",
            "--wait=false",
            check=False,
            timeout=60,
        )
        with contextlib.suppress(Exception):
            self._wait(
                "containerd to run no task", lambda: not self.ctr("tasks", "ls", "-q").split(), timeout=60
            )
