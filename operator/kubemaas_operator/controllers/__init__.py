"""Both controllers, one shape: ``controllers/<kind>/`` holds ``spec`` (the typed spec),
``children`` (pure builders of child objects), ``observe`` (pure readings of them), ``reconcile``
(the level-based sync) and ``handlers`` (thin kopf watches feeding a ``kube.workqueue.WorkQueue``),
over the shared layer in ``kube/`` (API client, cache, work queue, conditions, status patching,
Events), reached through one ``Context``.

``register()`` registers everything into an explicit registry, so nothing is registered at import
time (``kubemaas_operator.main`` is the one place that registers into kopf's default registry,
for ``kopf run -m kubemaas_operator.main``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import handlers as modelservice
from kubemaas_operator.controllers.trainingjob import handlers as trainingjob
from kubemaas_operator.kube.client import Kube
from kubemaas_operator.settings import OperatorSettings

STATE_PREFIX = "kubemaas.io"
"""Annotation prefix of kopf's own state on our custom resources."""


def configure_kopf(kopf_settings: kopf.OperatorSettings) -> None:
    """Standalone (no peering objects), state in annotations; Events are posted by ``kube.events``."""
    kopf_settings.peering.standalone = True
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    kopf_settings.persistence.finalizer = f"{STATE_PREFIX}/finalizer"
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the startup and login handlers and both controllers into ``registry``."""
    ctx = Context(Kube(field_manager=settings.field_manager, concurrency=settings.api_concurrency), settings)

    @kopf.on.startup(id="kubemaas-startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)

    @kopf.on.login(id="kubemaas-login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A custom registry has no default login handler: in-cluster first, then KUBECONFIG.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    modelservice.register(registry, ctx)
    trainingjob.register(registry, ctx)
