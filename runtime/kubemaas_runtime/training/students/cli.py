"""``kubemaas students``: one rank of training a pruned or distilled student of a trained bundle.

    kubemaas students --bundle URI --output URI --method prune [--prune-ratio 0.5] [--drop-layers N]
                      [--importance taylor|magnitude] [common options]
    kubemaas students --bundle URI --output URI --method distill --set KEY=VALUE ... [common options]

    common options: [--temperature T] [--alpha A] [--epochs N] [--batch-size B] [--lr X] [--seed S]
                    [--name NAME]

It needs torch, so it runs in the training image, under the same env contract as ``kubemaas train``
(WORLD_SIZE, RANK, MASTER_ADDR ...; none = one process). Every rank fetches the teacher bundle
itself. The student bundle at ``--output`` then enters ``kubemaas compress --student NAME=URI``.
Exit codes: 0 written, 1 training failed, 2 the bundle cannot be pruned/distilled or bad options.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kubemaas_runtime.training import progress
from kubemaas_runtime.training.config import parse_params
from kubemaas_runtime.training.settings import TrainingSettings

if TYPE_CHECKING:
    from kubemaas_runtime.training.students.build import StudentOptions


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="teacher bundle: a directory or a storage URI")
    parser.add_argument("--output", required=True, help="student bundle location: path, pvc://, s3:// ...")
    parser.add_argument("--method", required=True, choices=("prune", "distill"), help="how to make the student")
    parser.add_argument("--prune-ratio", type=float, help="prune: fraction of hidden units to remove (0.5)")
    parser.add_argument("--drop-layers", type=int, help="prune: number of blocks to remove (0)")
    parser.add_argument("--importance", choices=("taylor", "magnitude"), help="prune: unit ranking (taylor)")
    parser.add_argument("--set", dest="sizes", action="append", default=[], metavar="KEY=VALUE",
                        help="distill: the student's width/depth hyper-parameter, repeatable (e.g. --set layers=1)")
    parser.add_argument("--temperature", type=float, help="distillation temperature (2)")
    parser.add_argument("--alpha", type=float, help="weight of the teacher's soft targets, 0..1 (0.5)")
    parser.add_argument("--epochs", type=int, help="epochs (prune: half the recipe's; distill: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="GLOBAL batch size (the recipe's)")
    parser.add_argument("--lr", type=float, help="learning rate (the recipe's; halved for prune)")
    parser.add_argument("--seed", type=int, help="seed (0)")
    parser.add_argument("--name", help="model name in model.json (default: the teacher's + -pruned/-distilled)")


def _options(args: argparse.Namespace) -> StudentOptions:
    from kubemaas_runtime.training.students.build import StudentOptions

    values = {
        "method": args.method,
        "prune_ratio": args.prune_ratio,
        "drop_layers": args.drop_layers,
        "importance": args.importance,
        "sizes": parse_params(args.sizes),
        "temperature": args.temperature,
        "alpha": args.alpha,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    return StudentOptions(**{k: v for k, v in values.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = TrainingSettings()
    from kubemaas_runtime.bundle import BundleError
    from kubemaas_runtime.storage import StorageError, fetch
    from kubemaas_runtime.training.distributed import shutdown
    from kubemaas_runtime.training.errors import TrainingError
    from kubemaas_runtime.training.students.build import make_student
    from kubemaas_runtime.training.students.teachers import NotRebuildableError

    try:
        options = _options(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        return _fail(settings, f"invalid options: {problems}", 2)
    except TrainingError as exc:
        return _fail(settings, str(exc), 2)
    from kubemaas_runtime.storage.uris import nesting

    relation = nesting(args.output, args.bundle)
    if relation is not None:  # writing the student would rewrite the teacher bundle
        return _fail(settings, f"--output {args.output!r} is {relation} --bundle {args.bundle!r}; write the "
                               "student bundle to a location outside the teacher's", 2)
    with tempfile.TemporaryDirectory(prefix="kubemaas-students-") as scratch:
        try:
            teacher = Path(args.bundle)
            if "://" in args.bundle:
                teacher = fetch(args.bundle, Path(scratch) / "teacher").path
            make_student(teacher, options, args.output, settings, name=args.name)
            shutdown()
            return 0
        except (NotRebuildableError, BundleError, StorageError) as exc:
            return _fail(settings, str(exc), 2)
        except TrainingError as exc:
            return _fail(settings, str(exc), 1)
        except Exception as exc:
            traceback.print_exc()
            return _fail(settings, f"{type(exc).__name__}: {exc}", 1)


def _fail(settings: TrainingSettings, message: str, code: int) -> int:
    sys.stderr.write(f"kubemaas students: {message}\n")
    progress.write_termination_message(settings.termination_log, {"error": message})
    return code
