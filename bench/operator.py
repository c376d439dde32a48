"""Operator benchmark: 200 ModelServices against the real control plane (kwok nodes).

Measures, in one run:
  * apply -> Deployment created (p50/p95), while all 200 are in flight;
  * apply -> READY=True (kwok makes pods Ready as soon as they are scheduled);
  * the same 200 serving Deployments created directly (no operator) -> Available, as the
    side-by-side baseline for what the control plane itself costs;
  * the operator's peak RSS (VmHWM of the `kubemaas operator` process).

Prints a markdown table and writes bench/results/operator.md.

    .venv/bin/python bench/operator.py [--count 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "operator", REPO / "runtime"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from kubernetes import client, watch  # noqa: E402

from kubemaas_operator.manifests.modelservice import ServingBundle, deployment  # noqa: E402
from kubemaas_operator.settings import OperatorSettings  # noqa: E402
from kubemaas_operator.specs import parse_modelservice  # noqa: E402
from tests.cluster.harness import ControlPlane  # noqa: E402
from tests.operator.support import OperatorProcess  # noqa: E402

RESULTS = REPO / "bench" / "results" / "operator.md"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Watcher(threading.Thread):
    """Records the first monotonic time ``predicate(obj)`` holds for each object name."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.list_fn, self.namespace, self.predicate = list_fn, namespace, predicate
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        w = watch.Watch()
        while not self.stop.is_set():
            for event in w.stream(self.list_fn, self.namespace, timeout_seconds=5, _request_timeout=10):
                obj = event["object"]
                if not isinstance(obj, dict):
                    obj = client.ApiClient().sanitize_for_serialization(obj)
                name = obj["metadata"]["name"]
                if name not in self.seen and self.predicate(obj):
                    self.seen[name] = time.monotonic()
                if self.stop.is_set():
                    break

    def wait(self, names: Iterable[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        wanted = set(names)
        while time.monotonic() < deadline:
            if wanted <= self.seen.keys():
                return True
            time.sleep(0.1)
        return False


def ready(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def available(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return bool(st.get("availableReplicas")) and st.get("availableReplicas") == (obj.get("spec") or {}).get("replicas")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            return
        except client.ApiException:
            time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {name}")


def run_operator(plane: ControlPlane, api: client.ApiClient, count: int, timeout: float) -> dict[str, Any]:
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    ns = "bench-operator"
    create_namespace(core, ns)
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(plane, Path(tmp), namespaces=[ns], verbose=False).start()
        assert op.process is not None
        deps = Watcher(apps.list_namespaced_deployment, ns, lambda o: True)
        msvcs = Watcher(
            lambda namespace, **kw: custom.list_namespaced_custom_object(
                "kubemaas.io", "v1alpha1", namespace, "modelservices", **kw
            ),
            ns,
            ready,
        )
        deps.start()
        msvcs.start()
        time.sleep(1.0)  # let both watches establish before the first create
        applied: dict[str, float] = {}
        began = time.monotonic()
        for i in range(count):
            name = f"m{i:04d}"
            body = {"apiVersion": "kubemaas.io/v1alpha1", "kind": "ModelService", "metadata": {"name": name},
                    "spec": {"model": {"uri": f"s3://bench/models/{name}"}, "replicas": 1}}
            applied[name] = time.monotonic()
            custom.create_namespaced_custom_object("kubemaas.io", "v1alpha1", ns, "modelservices", body)
        apply_s = time.monotonic() - began
        ok_dep = deps.wait(applied, timeout)
        ok_ready = msvcs.wait(applied, timeout)
        total_s = time.monotonic() - began
        rss = vm_hwm_mb(op.process.pid)
        cpu = cpu_seconds(op.process.pid)
        deps.stop.set()
        msvcs.stop.set()
        op.stop()
    to_dep = [deps.seen[n] - t for n, t in applied.items() if n in deps.seen]
    to_ready = [msvcs.seen[n] - t for n, t in applied.items() if n in msvcs.seen]
    return {"apply_s": apply_s, "to_dep": to_dep, "to_ready": to_ready, "rss_mb": rss, "total_s": total_s,
            "cpu_s": cpu, "complete": ok_dep and ok_ready}


def run_baseline(api: client.ApiClient, count: int, timeout: float) -> dict[str, Any]:
    """The same Deployments (built by the operator's own builder), created directly."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = "bench-direct"
    create_namespace(core, ns)
    settings = OperatorSettings(runtime_image="kubemaas/kubemaas:bench")
    avail = Watcher(apps.list_namespaced_deployment, ns, available)
    avail.start()
    time.sleep(1.0)
    applied: dict[str, float] = {}
    began = time.monotonic()
    for i in range(count):
        name = f"d{i:04d}"
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "uid": "x"}}
        spec = parse_modelservice({"model": {"uri": f"s3://bench/models/{name}"}, "replicas": 1})
        body = deployment(owner, spec, ServingBundle(uri=f"s3://bench/models/{name}", sha256=""), settings)
        body["metadata"].pop("ownerReferences")
        applied[name] = time.monotonic()
        apps.create_namespaced_deployment(ns, body)
    apply_s = time.monotonic() - began
    ok = avail.wait(applied, timeout)
    avail.stop.set()
    to_avail = [avail.seen[n] - t for n, t in applied.items() if n in avail.seen]
    return {"to_avail": to_avail, "complete": ok, "apply_s": apply_s}


def row(label: str, values: list[float], count: int) -> str:
    return (f"| {label} | {len(values)}/{count} | {pct(values, 0.5) * 1000:.0f} | {pct(values, 0.95) * 1000:.0f} | "
            f"{max(values, default=float('nan')) * 1000:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    with ControlPlane(full=True) as plane:
        api = plane.api_client()
        base = run_baseline(api, args.count, args.timeout)
        result = run_operator(plane, api, args.count, args.timeout)
    median_ready = statistics.median(result["to_ready"]) if result["to_ready"] else float("nan")
    median_direct = statistics.median(base["to_avail"]) if base["to_avail"] else float("nan")
    lines = [
        f"# Operator benchmark ({args.count} ModelServices, real control plane + kwok, one run)",
        "",
        f"Created back to back, so all are in flight at once: {args.count} ModelService creates took "
        f"{result['apply_s']:.1f} s, {args.count} direct Deployment creates {base['apply_s']:.1f} s.",
        "",
        "| measurement | done | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        row("ModelService apply -> Deployment created", result["to_dep"], args.count),
        row("ModelService apply -> READY=True", result["to_ready"], args.count),
        row("baseline: same Deployment created directly -> Available", base["to_avail"], args.count),
        "",
        f"- operator overhead on time-to-ready (median, ModelService vs direct Deployment): "
        f"{median_ready / median_direct:.2f}x",
        f"- operator peak RSS (VmHWM): {result['rss_mb']:.0f} MB; operator CPU time: {result['cpu_s']:.1f} s "
        f"for {args.count} ModelServices ({result['cpu_s'] / args.count * 1000:.0f} ms each, startup included)",
        "- targets: p95 apply->Deployment < 1000 ms; RSS < 200 MB",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, shared with the control plane and kwok.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return 0 if result["complete"] and base["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
