"""Operator benchmark: 200 ModelServices against the real control plane (kwok nodes).

Measures, in one run on one control plane:
  * baseline: the same 200 serving Deployments (the operator's own builder) created directly,
    create -> Deployment seen by a watch, and -> Available;
  * ModelService apply -> Deployment created (p50/p95, all 200 in flight), and -> READY=True
    (kwok makes pods Ready as soon as they are scheduled);
  * the operator's peak RSS (VmHWM of the `kubemaas operator` process) and CPU time;
  * with ``--compare-with DIR``: the same for an operator tree in DIR (a directory holding
    ``operator/kubemaas_operator``, e.g. a copy of an earlier commit), run first, so the two
    are side by side. Each run gets a fresh namespace; the previous one is deleted first.

Prints a markdown table and writes bench/results/operator.md.

    .venv/bin/python -m bench.operator [--count 200] [--compare-with DIR]

Run it as a module (``-m bench.operator``) from the repository root: run as a script,
``bench/operator.py`` would shadow the standard library's ``operator`` module.
"""

from __future__ import annotations

import sys

if __name__ in ("__main__", "operator") and not __package__:
    sys.exit("bench/operator.py shadows the standard library's `operator` module when run as a script; "
             "run it from the repository root as: .venv/bin/python -m bench.operator")

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, watch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "operator", REPO / "runtime"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from kubemaas_operator.controllers.modelservice.children import ServingBundle, deployment  # noqa: E402
from kubemaas_operator.controllers.modelservice.spec import parse_modelservice  # noqa: E402
from kubemaas_operator.settings import OperatorSettings  # noqa: E402
from tests.cluster.harness import ControlPlane  # noqa: E402
from tests.operator.support import OperatorProcess  # noqa: E402

RESULTS = REPO / "bench" / "results" / "operator.md"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Watcher(threading.Thread):
    """Records the first monotonic time ``predicate(obj)`` holds for each object name.

    Events are parsed as plain JSON (``deserialize=False``): turning every event into client
    model objects costs this process more CPU than the operator spends, on the same cores.
    """

    def __init__(self, list_fn: Callable[..., Any], namespace: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.list_fn, self.namespace, self.predicate = list_fn, namespace, predicate
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        w = watch.Watch()
        while not self.stop.is_set():
            for event in w.stream(self.list_fn, self.namespace, timeout_seconds=5, _request_timeout=10,
                                  deserialize=False):
                now = time.monotonic()
                obj = event["object"]
                name = obj["metadata"]["name"]
                if name not in self.seen and self.predicate(obj):
                    self.seen[name] = now
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


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float = 600) -> None:
    """Delete ``name`` and wait until it is gone, so the next run starts on an idle control plane."""
    core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise TimeoutError(f"namespace {name} still there after {timeout:.0f}s")


@dataclass
class OperatorRun:
    label: str
    apply_s: float
    to_dep: list[float]
    to_ready: list[float]
    rss_mb: float
    cpu_s: float
    complete: bool


def run_operator(plane: ControlPlane, api: client.ApiClient, count: int, timeout: float, *, label: str,
                 ns: str, tree: Path | None = None) -> OperatorRun:
    """``count`` ModelServices created back to back while ``kubemaas operator`` watches ``ns``;
    with ``tree``, the operator imports kubemaas_operator from ``tree/operator`` instead."""
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    create_namespace(core, ns)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tree / "operator"), os.environ.get("PYTHONPATH")]))} \
        if tree is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(plane, Path(tmp), namespaces=[ns], verbose=False, env=env).start()
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
        cpu0 = cpu_seconds(op.process.pid)
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
        rss = vm_hwm_mb(op.process.pid)
        cpu = cpu_seconds(op.process.pid) - cpu0
        deps.stop.set()
        msvcs.stop.set()
        op.stop()
    delete_namespace(core, ns)
    return OperatorRun(
        label=label, apply_s=apply_s,
        to_dep=[deps.seen[n] - t for n, t in applied.items() if n in deps.seen],
        to_ready=[msvcs.seen[n] - t for n, t in applied.items() if n in msvcs.seen],
        rss_mb=rss, cpu_s=cpu, complete=ok_dep and ok_ready,
    )


def run_baseline(api: client.ApiClient, count: int, timeout: float) -> dict[str, Any]:
    """The same Deployments (built by the operator's own builder), created directly."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = "bench-direct"
    create_namespace(core, ns)
    settings = OperatorSettings(serving_image="kubemaas/kubemaas:bench")
    seen = Watcher(apps.list_namespaced_deployment, ns, lambda o: True)
    avail = Watcher(apps.list_namespaced_deployment, ns, available)
    seen.start()
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
    ok = seen.wait(applied, timeout) and avail.wait(applied, timeout)
    seen.stop.set()
    avail.stop.set()
    delete_namespace(core, ns)
    return {
        "to_seen": [seen.seen[n] - t for n, t in applied.items() if n in seen.seen],
        "to_avail": [avail.seen[n] - t for n, t in applied.items() if n in avail.seen],
        "complete": ok, "apply_s": apply_s,
    }


def row(label: str, values: list[float], count: int) -> str:
    return (f"| {label} | {len(values)}/{count} | {pct(values, 0.5) * 1000:.0f} | {pct(values, 0.95) * 1000:.0f} | "
            f"{max(values, default=float('nan')) * 1000:.0f} |")


def ratio(a: list[float], b: list[float], q: float) -> float:
    return pct(a, q) / pct(b, q) if a and b else float("nan")


def report(count: int, base: dict[str, Any], runs: list[OperatorRun]) -> str:
    lines = [
        f"# Operator benchmark ({count} ModelServices, real control plane + kwok, one run)",
        "",
        f"Created back to back, so all are in flight at once: {count} direct Deployment creates took "
        f"{base['apply_s']:.1f} s; " + "; ".join(f"{count} ModelService creates ({r.label}) {r.apply_s:.1f} s"
                                                 for r in runs) + ".",
        "",
        "| measurement | done | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        row("baseline: Deployment created directly -> seen by a watch", base["to_seen"], count),
        row("baseline: Deployment created directly -> Available", base["to_avail"], count),
    ]
    for r in runs:
        lines += [
            row(f"{r.label}: ModelService apply -> Deployment created", r.to_dep, count),
            row(f"{r.label}: ModelService apply -> READY=True", r.to_ready, count),
        ]
    lines.append("")
    for r in runs:
        lines += [
            f"- {r.label}: apply->Deployment created vs direct create->seen: "
            f"{ratio(r.to_dep, base['to_seen'], 0.5):.2f}x (p50), {ratio(r.to_dep, base['to_seen'], 0.95):.2f}x (p95); "
            f"apply->READY vs direct create->Available: {ratio(r.to_ready, base['to_avail'], 0.5):.2f}x (p50)",
            f"- {r.label}: operator peak RSS (VmHWM) {r.rss_mb:.0f} MB; operator CPU {r.cpu_s:.1f} s for "
            f"{count} ModelServices ({r.cpu_s / count * 1000:.0f} ms each)",
        ]
    if len(runs) == 2:
        before, after = runs
        lines.append(
            f"- {after.label} vs {before.label}: apply->Deployment p50 {ratio(after.to_dep, before.to_dep, 0.5):.2f}x, "
            f"p95 {ratio(after.to_dep, before.to_dep, 0.95):.2f}x; apply->READY p50 "
            f"{ratio(after.to_ready, before.to_ready, 0.5):.2f}x"
        )
    lines += [
        "- targets: p95 apply->Deployment < 1000 ms; RSS < 200 MB",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, shared with the control plane and kwok.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--compare-with", type=Path, default=None, metavar="DIR",
                        help="also run the operator from DIR/operator (e.g. an earlier commit's tree), first")
    parser.add_argument("--label", default="this tree", help="label of this tree's operator in the table")
    args = parser.parse_args(argv)
    if args.compare_with is not None and not (args.compare_with / "operator" / "kubemaas_operator").is_dir():
        parser.error(f"--compare-with {args.compare_with}: no operator/kubemaas_operator in it")
    runs: list[OperatorRun] = []
    with ControlPlane(full=True) as plane:
        api = plane.api_client()
        base = run_baseline(api, args.count, args.timeout)
        if args.compare_with is not None:
            runs.append(run_operator(plane, api, args.count, args.timeout, label=f"{args.compare_with.name}",
                                     ns="bench-compare", tree=args.compare_with))
        runs.append(run_operator(plane, api, args.count, args.timeout, label=args.label, ns="bench-operator"))
    text = report(args.count, base, runs)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return 0 if base["complete"] and all(r.complete for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
