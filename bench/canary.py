"""Canary rollout benchmark (not a test): ``python bench/canary.py [--case bad|good|both]``.

What a client sees during a canary rollout at the default ``spec.rollout`` settings (steps
20 % / 30 s then 50 % / 30 s; 15 s analysis intervals, minRequests 20, maxErrorRate 0.01),
measured on loopback with real ``kubemaas serve`` processes instead of pods: one process
stands for the stable pods, one for the canary pods, and the load generator picks a target
per request in proportion to the pod split of 5 replicas (what a ClusterIP Service does
without a mesh). The controller loop here is the operator's: a reconcile every 5 s (or when an
interval falls due) scrapes both processes' ``/metrics`` through ``Analyses.measure``, which
judges each interval (and a breach as soon as it shows), ``state.step`` moves the rollout,
and the split follows ``Plan.weight`` at once (in a cluster, removing the canary pods from
the Service's endpoints adds the reconcile + endpoint propagation time on top).

* bad: the canary fails every request. Reported: time from the canary Ready to rollback,
  requests that reached the bad model, their share of all requests in that time, and the
  requests that failed (any answer but a 2xx, so the bad model's 400s count).
* good: the canary is a healthy retrained model. Reported: time to promotion, failed requests.

Prints a markdown table and writes it to bench/results/canary.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "runtime"), str(ROOT)]

import httpx  # noqa: E402

from kubemaas_operator.controllers.modelservice.canary import TICK_S  # noqa: E402
from kubemaas_operator.rollout.analysis import Analyses, Variants  # noqa: E402
from kubemaas_operator.rollout.judgement import Verdict  # noqa: E402
from kubemaas_operator.rollout.spec import RolloutSpec, parse_rollout  # noqa: E402
from kubemaas_operator.rollout.split import split_replicas  # noqa: E402
from kubemaas_operator.rollout.state import Observation, Revision, RolloutState, step  # noqa: E402
from kubemaas_runtime.serving.process import ServeProcess  # noqa: E402
from tests.operator.rollout import models  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "canary.md"
REPLICAS = 5
RATE = 40.0
"""Requests per second the clients send, all together."""
WORKERS = 4
BODY = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8}]}
V1, V2 = Revision("1" * 64, "v1"), Revision("2" * 64, "v2")


@dataclass
class Router:
    """The Service: a weighted round robin over stable and canary pods of the current split."""

    stable_pods: int = REPLICAS
    canary_pods: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def set_weight(self, weight: int) -> None:
        split = split_replicas(REPLICAS, weight)
        with self.lock:
            self.stable_pods, self.canary_pods = split.stable, split.canary

    def pick(self) -> str:
        with self.lock:
            n = next(self.counter) % (self.stable_pods + self.canary_pods)
            return "canary" if n < self.canary_pods else "stable"


@dataclass
class Outcome:
    case: str
    ready_at: float
    finished_at: float
    phase: str
    reason: str
    log: list[tuple[float, str, int]]

    def window(self) -> list[tuple[float, str, int]]:
        return [r for r in self.log if self.ready_at <= r[0] <= self.finished_at]


def load(urls: dict[str, str], router: Router, stop: threading.Event, log: list[tuple[float, str, int]]) -> None:
    period = WORKERS / RATE
    with httpx.Client(timeout=30) as client:
        next_t = time.monotonic()
        while not stop.is_set():
            target = router.pick()
            try:
                status = client.post(f"{urls[target]}/v2/models/m/infer", json=BODY).status_code
            except httpx.HTTPError:
                status = 599
            log.append((time.monotonic(), target, status))
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))


def control(spec: RolloutSpec, urls: dict[str, str], router: Router, deadline_s: float) -> tuple[float, RolloutState]:
    """The operator's loop: a reconcile every TICK_S (or when an interval falls due), each one
    ``Analyses.measure`` + ``state.step``, as ``controllers/modelservice/canary.py`` does."""
    state = RolloutState(stable=V1)
    analyses, key = Analyses(), ("bench", "m")
    pods = Variants(stable={"s": f"{urls['stable']}/metrics"}, canary={"c": f"{urls['canary']}/metrics"})
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        now = time.monotonic()
        verdict: Verdict | None = None
        if state.phase in ("Progressing", "Paused"):
            verdict = asyncio.run(analyses.measure(key, V2.identity, pods, spec.analysis, now))
            if verdict is not None:
                print(f"  t={now - start:5.1f}s {verdict.decision}: {verdict.reason}", flush=True)
        plan = step(state, spec, Observation(now, V2, "spec-1", canary_ready=True,
                                             stable_current=state.phase == "Promoting", verdict=verdict))
        state = plan.state
        if state.phase == "Promoting":
            router.set_weight(100)  # the stable Deployment now runs v2: every pod serves it
        else:
            router.set_weight(plan.weight)
        for e in plan.events:
            print(f"  t={now - start:5.1f}s event {e.type} {e.reason}: {e.message}", flush=True)
        if state.phase in ("Stable", "RolledBack"):
            return now, state
        due = analyses.next_in(key, time.monotonic())
        time.sleep(min(TICK_S, due) if due is not None else 0.2)
    return time.monotonic(), state


def run_case(case: str, root: Path) -> Outcome:
    stable_dir = models.good(root / f"{case}-stable", seed=0)
    canary_dir = models.failing(root / f"{case}-canary") if case == "bad" else models.good(root / f"{case}-canary", 1)
    spec = parse_rollout({"strategy": "Canary"})
    with ServeProcess(stable_dir, root / f"{case}-stable.log") as s, ServeProcess(canary_dir, root / f"{case}-c.log") as c:
        urls = {"stable": s.url, "canary": c.url}
        router, stop = Router(), threading.Event()
        log: list[tuple[float, str, int]] = []
        workers = [threading.Thread(target=load, args=(urls, router, stop, log)) for _ in range(WORKERS)]
        for w in workers:
            w.start()
        time.sleep(2.0)  # steady load on stable before the canary appears
        router.set_weight(spec.canary_steps[0].weight)
        ready_at = time.monotonic()  # the canary process is Ready (ServeProcess waited for it)
        finished_at, state = control(spec, urls, router, deadline_s=300)
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join()
    return Outcome(case, ready_at, finished_at, state.phase, state.reason, log)


def report(outcomes: list[Outcome]) -> str:
    lines = [
        f"Loopback, {REPLICAS} replicas split per pod, {RATE:.0f} req/s from {WORKERS} clients, default spec.rollout.",
        "",
        "| canary | outcome | canary Ready -> outcome | requests in that time | to the canary | share | failed (non-2xx) |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        win = o.window()
        to_canary = sum(1 for _, t, _ in win if t == "canary")
        # Every answer but a 2xx failed the client: the failing model answers 400 since its kernel's
        # error became an input error (it answered 500 before), and both are what a client sees.
        failed = sum(1 for _, _, status in o.log if not 200 <= status < 300)
        share = to_canary / len(win) if win else 0.0
        lines.append(f"| {o.case} | {o.phase} | {o.finished_at - o.ready_at:.1f} s | {len(win)} | {to_canary} | "
                     f"{share:.1%} | {failed} |")
    lines += ["", *[f"- {o.case}: {o.reason or 'promoted'}" for o in outcomes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--case", choices=("bad", "good", "both"), default="both")
    args = parser.parse_args(argv)
    cases = ["bad", "good"] if args.case == "both" else [args.case]
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = [run_case(c, Path(tmp)) for c in cases]
    table = report(outcomes)
    print(table)
    if args.case == "both":
        RESULTS.write_text("# Canary rollouts (bench/canary.py)\n\n" + table)


if __name__ == "__main__":
    main()
