"""Thin kopf handlers, registered into an explicit registry by ``register()``.

Each handler module exposes ``register(registry: kopf.OperatorRegistry, settings: OperatorSettings)``
and decorates its handlers with ``registry=registry``, so nothing is registered at import time
(``kubemaas_operator.main`` is the one place that registers into kopf's default registry,
for ``kopf run -m kubemaas_operator.main``).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable
from typing import Any, Protocol, cast

import kopf

from kubemaas_operator import cluster
from kubemaas_operator.manifests.common import GROUP
from kubemaas_operator.settings import OperatorSettings

HANDLER_MODULES = (
    "kubemaas_operator.handlers.modelservice",
    "kubemaas_operator.handlers.trainingjob",
)

STATE_PREFIX = "kubemaas.io"
"""Annotation prefix of kopf's own progress and diff-base state on our custom resources."""


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, without kopf's deep copies where they are wasted.

    kopf builds the "essence" of EVERY watched object on EVERY event -- pods and Deployments
    too, which only have watching handlers here and never use it -- by deep-copying the whole
    body (managedFields and status included) and then dropping ``metadata`` and ``status``.
    Under load that deep copy was the operator's largest CPU cost. Here:

    * objects outside ``tracked_groups`` (the API groups whose kinds have kopf change
      handlers: only our own CRDs) get an empty essence: nothing reads it;
    * tracked objects get exactly kopf's essence, but ``metadata`` (except labels and
      annotations) and ``status`` are left out before the copy instead of after it.
    """

    def __init__(self, *, tracked_groups: Collection[str], prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self.tracked_groups = frozenset(tracked_groups)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        group = str(body.get("apiVersion") or "").rpartition("/")[0]
        if group not in self.tracked_groups:
            return kopf.BodyEssence()
        fields = list(extra_fields or [])
        if any(_outside_essence(field) for field in fields):
            return super().build(body=body, extra_fields=fields)  # e.g. a handler on a status field
        meta = body.get("metadata") or {}
        slim = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        slim["metadata"] = {key: meta[key] for key in ("labels", "annotations") if key in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)), extra_fields=fields)


def _outside_essence(field: kopf.FieldSpec) -> bool:
    if field is None:
        return False
    path = field.split(".") if isinstance(field, str) else list(field)
    return bool(path) and (path[0] == "status" or (path[0] == "metadata" and path[1:2] not in (["labels"],
                                                                                                ["annotations"])))


CHANGE_TRACKED_GROUPS = (GROUP,)
"""API groups of the kinds that have kopf change handlers (create/update/resume): TrainingJob.
A change handler registered for a kind of another group must add its group here."""


class HandlerModule(Protocol):
    def register(self, registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None: ...


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Standalone (no peering objects), state in annotations, events posted for warnings."""
    kopf_settings.peering.standalone = True
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    kopf_settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        tracked_groups=CHANGE_TRACKED_GROUPS, prefix=STATE_PREFIX, key="last-handled-configuration"
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
        module = importlib.import_module(module_name)
        cast(HandlerModule, module).register(registry, settings)
