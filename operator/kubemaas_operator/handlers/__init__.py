"""Thin kopf handlers, registered into an explicit registry by ``register()``.

Each handler module exposes ``register(registry: kopf.OperatorRegistry, settings: OperatorSettings)``
and decorates its handlers with ``registry=registry``, so nothing is registered at import time
(``kubemaas_operator.main`` is the one place that registers into kopf's default registry,
for ``kopf run -m kubemaas_operator.main``).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

import kopf

from kubemaas_operator import cluster
from kubemaas_operator.settings import OperatorSettings

HANDLER_MODULES = (
    "kubemaas_operator.handlers.modelservice",
    "kubemaas_operator.handlers.trainingjob",
)

STATE_PREFIX = "kubemaas.io"
"""Annotation prefix of kopf's own progress and diff-base state on our custom resources."""


class HandlerModule(Protocol):
    def register(self, registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None: ...


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Standalone (no peering objects), state in annotations, events posted for warnings."""
    kopf_settings.peering.standalone = True
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STATE_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{STATE_PREFIX}/finalizer"
    kopf_settings.posting.level = 30  # logging.WARNING: only warnings and errors become k8s Events
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the startup handler and every handler module into ``registry``."""

    @kopf.on.startup(id="kubemaas-startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, ours)
        cluster.configure(field_manager=ours.field_manager, concurrency=ours.api_concurrency)

    @kopf.on.login(id="kubemaas-login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A custom registry has no default login handler: in-cluster first, then KUBECONFIG.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    ours = settings
    for module_name in HANDLER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # The TrainingJob handlers are developed in parallel; an absent module is skipped,
            # any other import error (a broken module) still fails loudly.
            if exc.name != module_name:
                raise
            continue
        cast(HandlerModule, module).register(registry, settings)
