"""``kubemaas operator``: run the kopf operator standalone (no peering objects)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kopf

from kubemaas_operator.controllers import register
from kubemaas_operator.settings import OperatorSettings


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``kubemaas operator`` flags to ``parser``."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", metavar="NS",
        help="namespace (or glob pattern) to watch; repeatable (default: KUBEMAAS_NAMESPACES, else all)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness", metavar="URL", default=None,
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz (default: KUBEMAAS_LIVENESS)",
    )
    parser.add_argument("--serving-image", default=None, help="default serving/compression image (KUBEMAAS_SERVING_IMAGE)")
    parser.add_argument("--training-image", default=None, help="training recipe image (KUBEMAAS_TRAINING_IMAGE)")
    parser.add_argument("-v", "--verbose", action="store_true", help="verbose kopf logging")
    parser.add_argument("--debug", action="store_true", help="debug kopf logging")


def build_settings(args: argparse.Namespace) -> OperatorSettings:
    """Env settings, with command-line flags taking precedence."""
    overrides: dict[str, Any] = {}
    if args.namespaces:
        overrides["namespaces"] = args.namespaces
    if args.all_namespaces:
        overrides["namespaces"] = []
    if args.liveness:
        overrides["liveness"] = args.liveness
    if args.serving_image:
        overrides["serving_image"] = args.serving_image
    if args.training_image:
        overrides["training_image"] = args.training_image
    return OperatorSettings(**overrides)


def run(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped; the exit status."""
    settings = build_settings(args)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    # The kubernetes client logs whole response bodies at DEBUG; keep it out of --verbose.
    logging.getLogger("kubernetes").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if not (args.verbose or args.debug):
        # kopf logs every watch-event handler call at INFO; with hundreds of pods that is most of
        # the operator's work. Our own kubemaas.* loggers say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.peering.standalone = True
    kopf.run(
        registry=registry,
        settings=kopf_settings,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness,
    )
    return 0
