"""What every controller's reconcile receives: the API client, the watch-fed cache, the settings
and a logger. Built once per operator by ``controllers.register``; nothing module-global."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kubemaas_operator.kube.cache import Cache
from kubemaas_operator.kube.client import Kube
from kubemaas_operator.rollout.analysis import Analyses
from kubemaas_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Context:
    """The shared layer a reconcile step works through (kopf-independent, so tests can build one)."""

    kube: Kube
    settings: OperatorSettings
    cache: Cache = field(default_factory=Cache)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kubemaas"))
    analyses: Analyses = field(default_factory=Analyses)
    """Canary analysis state (scrape baselines, due intervals) of the ModelServices (spec.rollout)."""
