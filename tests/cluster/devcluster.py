"""`python -m tests.cluster.devcluster` (or `make dev-cluster`): the test control plane in
the foreground, for poking at with kubectl, helm or a locally run operator.

Prints `export KUBECONFIG=...` and `export PATH=...` lines, then runs until Ctrl-C or
SIGTERM (or until a component dies, which it reports with that component's log tail),
and stops every process it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.cluster.harness import CRDS_DIR, ControlPlane, ControlPlaneError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.devcluster", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--api-port", type=int, default=None, help="API server port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="directory for etcd data, certificates and logs; must not hold an earlier run "
        "(default: a new temporary directory, removed on exit)",
    )
    parser.add_argument("--no-crds", action="store_true", help=f"do not apply {CRDS_DIR}")
    parser.add_argument("--api-only", action="store_true", help="only etcd and kube-apiserver")
    parser.add_argument(
        "-v", "--verbosity", type=int, default=1, help="klog verbosity of the kube components"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    plane = ControlPlane(
        full=not args.api_only,
        work_dir=args.work_dir,
        crds_dir=None if args.no_crds else CRDS_DIR,
        api_port=args.api_port,
        verbosity=args.verbosity,
    )
    try:
        plane.start()
        print(f"control plane up in {plane.timings['total_s']:.1f}s: {plane.server}", flush=True)
        print(f"logs: {plane.work_dir / 'logs'}", flush=True)
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        print(f"export PATH={plane.bin_dir}:$PATH", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            plane.check_alive()
    except ControlPlaneError as error:
        print(f"devcluster: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        plane.stop()
        print("control plane stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
