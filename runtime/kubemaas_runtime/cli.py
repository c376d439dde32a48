"""The ``kubemaas`` console script.

Each subcommand lives in its own module exposing::

    def configure(parser: argparse.ArgumentParser) -> None   # add arguments
    def run(args: argparse.Namespace) -> int                  # do the work, return an exit code

Only the chosen subcommand's module is imported, so the operator image (kopf and the
kubernetes client only) can run ``kubemaas operator`` without torch or ONNX Runtime,
and nothing is parsed or done at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("kubemaas_runtime.serving.cli", "serve a model bundle over the Open Inference Protocol v2"),
    "fetch": ("kubemaas_runtime.storage.cli", "fetch a model bundle URI into a local directory"),
    "train": ("kubemaas_runtime.training.cli", "run one rank of distributed training, write a bundle"),
    "bundle": ("kubemaas_runtime.generation.bundle_cli", "write model.json for an onnxruntime-genai model folder"),
    "compress": ("kubemaas_runtime.compression.cli", "build, measure and select compressed variants"),
    "students": ("kubemaas_runtime.training.students.cli", "prune or distil a trained bundle into a student bundle"),
    "demo": ("kubemaas_runtime.demo", "train -> compress -> serve locally, no cluster needed"),
    "operator": ("kubemaas_operator.cli", "run the kopf operator for TrainingJob and ModelService"),
}


class Subcommand(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: kubemaas <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"kubemaas: unknown command {name!r}\n\n{_usage()}")
        return 2
    module_name, help_ = COMMANDS[name]
    module = cast(Subcommand, importlib.import_module(module_name))
    parser = argparse.ArgumentParser(prog=f"kubemaas {name}", description=help_)
    module.configure(parser)
    return module.run(parser.parse_args(rest))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
