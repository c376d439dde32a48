"""Put the kubectl transcript of the last `make e2e` run into the README's cluster quickstart.

    .venv/bin/python -m tests.e2e.capture_readme [--report /tmp/kubemaas-e2e-report.json]

tests/e2e/test_realpods.py records each command it shows (and its output) in the report's
``transcript``; this replaces the text between the README's ``<!-- quickstart:start -->``
and ``<!-- quickstart:end -->`` markers with it, so the quickstart shows real pods on a
real Node. Raises SystemExit naming the file when the report or a marker is missing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- quickstart:start -->", "<!-- quickstart:end -->"
HEADER = """Captured by `make e2e` (`python -m tests.e2e.capture_readme`) on the 2-core development
machine: the control plane of tests/cluster plus a real Node (containerd + runc, kubelet,
CNI bridge, kube-proxy, CoreDNS), the images built from the Dockerfile, the operator running
as a pod on the chart's RBAC. The `kubemaas-models` claim is a pre-bound hostPath volume.
Times are from that run: {timings}.
"""


def splice(readme: str, transcript: Sequence[str], timings: dict[str, float]) -> str:
    """`readme` with the quickstart block replaced; raises ValueError without both markers."""
    if START not in readme or END not in readme:
        raise ValueError(f"README lacks {START} ... {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    shown = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.0f} s" for k, v in timings.items())
    body = HEADER.format(timings=shown) + "\n```console\n" + "\n".join(transcript).rstrip() + "\n```\n"
    return f"{head}{START}\n{body}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=Path("/tmp/kubemaas-e2e-report.json"))
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"capture_readme: cannot read {args.report}: {error}") from None
    if not report.get("transcript"):
        raise SystemExit(f"capture_readme: {args.report} has no transcript (did make e2e pass?)")
    args.readme.write_text(splice(args.readme.read_text(), report["transcript"], report.get("timings", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
