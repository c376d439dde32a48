"""Regenerate docs/captured/quickstart.txt (the lineage: examples/trainingjob.yaml +
examples/modelservice.yaml) and docs/captured/kubectl-get-msvc.txt (examples/modelservice-uri.yaml):
the sessions' real kubectl output.

    .venv/bin/python -m tests.operator.capture_quickstart [--output PATH] [--output-uri PATH] [--namespace demo]

Starts its own control plane (etcd, kube-apiserver, controllers, scheduler, kwok) and
``kubemaas operator`` as a local process (no Helm install needed for this), then runs
tests/operator/quickstart.py, which asserts every step as the cluster test does. kwok runs no
containers: the training and compression pods' completions are written through pods/status,
as the header of the captured file says.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.cluster.harness import ControlPlane
from tests.operator import quickstart
from tests.operator.support import OperatorProcess, poll

OUTPUT = quickstart.REPO / "docs" / "captured" / "quickstart.txt"
OUTPUT_URI = quickstart.REPO / "docs" / "captured" / "kubectl-get-msvc.txt"
HEADER = """\
# Quickstart, captured by `python -m tests.operator.capture_quickstart` (real kubectl output).
# Control plane: etcd + kube-apiserver + controller-manager + scheduler, with kwok simulating the
# node; `kubemaas operator` ran as a local process. The PVC kubemaas-models (the model store) was
# created first. kwok runs no containers, so between the steps below the training ranks and the
# compression pod were marked Succeeded with their termination messages (contract 3) through
# pods/status, and kwok made the serving pods Ready.

"""

HEADER_URI = """\
# A bundle served by URI (examples/modelservice-uri.yaml), captured by
# `python -m tests.operator.capture_quickstart` (real kubectl output) right after quickstart.txt, on
# the same control plane (kwok simulates the node: pods are Ready without pulling images).

"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--output-uri", type=Path, default=OUTPUT_URI)
    parser.add_argument("--namespace", default="demo")
    args = parser.parse_args(argv)
    with ControlPlane(full=True) as plane, tempfile.TemporaryDirectory() as tmp:
        plane.kubectl("create", "namespace", args.namespace)
        poll(lambda: plane.kubectl("get", "serviceaccount", "default", "-n", args.namespace,
                                   check=False).returncode == 0, what=f"ServiceAccount {args.namespace}/default")
        quickstart.model_store(plane, args.namespace)
        operator = OperatorProcess(plane, Path(tmp), verbose=False).start()
        try:
            transcript = quickstart.run(plane, args.namespace)
            by_uri = quickstart.run_uri(plane, args.namespace)
        finally:
            operator.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(HEADER + transcript.text())
    args.output_uri.write_text(HEADER_URI + by_uri.text())
    print(f"wrote {args.output} and {args.output_uri}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
