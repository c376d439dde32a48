"""Regenerate the README's captured cluster quickstart from a real session.

    .venv/bin/python -m tests.operator.capture_quickstart [--namespace demo]

Starts its own control plane (etcd, kube-apiserver, controllers, scheduler, kwok), installs
the Helm chart (kwok plays the operator's pod, so it becomes Available without running),
runs ``kubemaas operator`` as a local process to do the reconciling, then runs
tests/operator/quickstart.py, which asserts every step as the cluster test does. kwok runs
no containers: the training and compression pods' completions are written through
pods/status, as the text spliced into the README says. The output between the README's
``quickstart`` markers is replaced with the real kubectl/helm output of this session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.cluster.harness import ControlPlane
from tests.operator import quickstart
from tests.operator.support import OperatorProcess, poll

README = quickstart.REPO / "README.md"
START, END = "<!-- quickstart:start -->", "<!-- quickstart:end -->"
INTRO = """\
Captured by `python -m tests.operator.capture_quickstart` on the test control plane (real
etcd, kube-apiserver, controller-manager, scheduler, `kubectl` and `helm`; kwok simulates the
node, so pods are Ready without pulling images). `kubemaas operator` ran as a local process
beside the chart's simulated pod. kwok runs no containers, so between the steps the training
ranks and the compression pod were marked Succeeded with their termination messages through
`pods/status`; everything else is the operator's and Kubernetes' own doing.
"""


def splice(readme: str, body: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body.rstrip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default="demo")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    ns = args.namespace
    with ControlPlane(full=True) as plane, tempfile.TemporaryDirectory() as tmp:
        helm = plane.helm("install", "kubemaas", str(quickstart.REPO / "charts" / "kubemaas"), "-n", "kubemaas-system",
                          "--create-namespace", "--wait", "--timeout", "120s").stdout
        notes = helm.split("NOTES:", 1)[0].strip()
        installed = plane.kubectl("get", "deploy", "-n", "kubemaas-system").stdout
        plane.kubectl("create", "namespace", ns)
        poll(lambda: plane.kubectl("get", "serviceaccount", "default", "-n", ns,
                                   check=False).returncode == 0, what=f"ServiceAccount {ns}/default")
        quickstart.model_store(plane, ns)
        operator = OperatorProcess(plane, Path(tmp), verbose=False).start()
        try:
            transcript = quickstart.run(plane, ns)
            transcript.record(plane, "get", "job,svc", "-l", "kubemaas.io/trainingjob=digits", "-n", ns)
            transcript.record(
                plane, "get", "job", "digits-r0", "-n", ns, "-o",
                "jsonpath={range .spec.template.spec.containers[0].env[*]}{.name}={.value}{.valueFrom.fieldRef.fieldPath}{'\\n'}{end}",
            )
        finally:
            operator.stop()
    body = (
        f"{INTRO}\n```console\n$ helm install kubemaas charts/kubemaas -n kubemaas-system --create-namespace --wait\n"
        f"{notes}\n...\n\n$ kubectl get deploy -n kubemaas-system\n{installed}\n{transcript.text()}```\n"
    )
    args.readme.write_text(splice(args.readme.read_text(), body))
    print(f"updated {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
