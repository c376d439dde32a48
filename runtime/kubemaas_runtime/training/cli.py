"""``kubemaas train``: one rank of distributed training that ends in a model bundle.

    kubemaas train --recipe digits|sequence --output URI [--epochs N] [--batch-size B] [--lr X]
                   [--seed S] [--prune-amount F] [--name NAME] [--set key=value ...]
    kubemaas train --module pkg.mod:fn --output URI

Rank layout from the env contract (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, or PET_*/LOCAL_RANK);
without WORLD_SIZE it runs as a single process. See ``progress.py`` for what it reports.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from kubemaas_runtime.storage import StorageError
from kubemaas_runtime.training import progress
from kubemaas_runtime.training.config import build_config, parse_params
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.settings import TrainingSettings


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="built-in recipe: digits, sequence or textgen")
    source.add_argument("--module", help="user code as pkg.mod:fn, called as fn(config) on every rank")
    parser.add_argument("--output", required=True, help="bundle location: path, pvc://, s3:// ...")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="GLOBAL batch size, split across ranks")
    parser.add_argument("--lr", type=float, help="learning rate (Adam; default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and shuffling (default 0)")
    parser.add_argument("--prune-amount", type=float, default=0.0, help="magnitude-prune this weight fraction")
    parser.add_argument("--name", help="model name in model.json (default: the recipe's name)")
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe hyper-parameter, repeatable (e.g. --set hidden=256)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = TrainingSettings()
    try:
        from kubemaas_runtime.training.distributed import shutdown

        config = build_config(
            output=args.output,
            recipe=args.recipe,
            module=args.module,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            prune_amount=args.prune_amount,
            name=args.name,
            params=parse_params(args.params),
        )
        if config.recipe is not None:
            from kubemaas_runtime.training.loop import train_recipe

            train_recipe(config, settings)
        else:
            from kubemaas_runtime.training.usercode import run_module

            run_module(config)
        shutdown()
        return 0
    except (TrainingError, StorageError) as exc:
        return _fail(settings, str(exc))
    except Exception as exc:
        traceback.print_exc()
        return _fail(settings, f"{type(exc).__name__}: {exc}")


def _fail(settings: TrainingSettings, message: str) -> int:
    sys.stderr.write(f"kubemaas train: {message}\n")
    progress.write_termination_message(settings.termination_log, {"error": message})
    return 1
