"""The only module that talks to the Kubernetes API: ``Kube``, passed to every controller.

Generic, dict-in/dict-out helpers over the official (synchronous) client, run in a
bounded thread pool so the kopf event loop never blocks:

* ``apply(obj)``: server-side apply (``application/apply-patch+yaml``) with the operator's
  field manager -- idempotent create-or-patch of a child object;
* ``get`` / ``list_objects`` / ``delete`` / ``patch_status`` / ``merge_patch``;
* ``create`` (for Events).

Objects are addressed by ``apiVersion`` + ``kind``; plurals come from a small table of the
kinds the operator touches (plus the naive ``kind.lower() + "s"`` for anything else).
Errors are the client's ``ApiException`` (``status``, ``reason``, ``body``);
``api_message`` extracts the API server's own message from one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = ["ApiException", "Kube", "api_message", "is_not_found", "path_for"]

T = TypeVar("T")

PLURALS: dict[str, str] = {
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Job": "jobs",
    "Pod": "pods",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Event": "events",
    "Namespace": "namespaces",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "ModelService": "modelservices",
    "TrainingJob": "trainingjobs",
}

SLOW_KINDS = frozenset({"Service"})
"""Kinds whose writes go through threads of their own (``SLOW_LANE_WIDTH``). The API server
serialises Service creation (ClusterIP allocation): with 200 ModelServices in flight on the
2-core test box a Service apply took 0.4-1.5 s server side (a Deployment apply 0.06 s).
Sharing one pool, a burst of them occupied every thread and all other calls -- the next
ModelService's Deployment included -- queued behind them for seconds."""

SLOW_LANE_WIDTH = 8
"""Threads for writes of the SLOW_KINDS, on top of ``concurrency``."""


def path_for(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection (no name) or an object, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    plural = PLURALS.get(kind, kind.lower() + "s")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{ns}/{plural}{tail}"


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is the API's 404."""
    return isinstance(exc, ApiException) and exc.status == 404


def api_message(exc: ApiException) -> str:
    """The API server's own message of a refusal (the Status body's ``message``), else the reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


class Kube:
    """A connection to one API server: credentials, thread pools and the field manager.

    Credentials load on first use (in-cluster when KUBERNETES_SERVICE_HOST is set, else
    KUBECONFIG), so building one does no I/O.
    """

    def __init__(self, *, field_manager: str = "kubemaas-operator", concurrency: int = 16) -> None:
        self.field_manager = field_manager
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._api: client.ApiClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slow_pool: ThreadPoolExecutor | None = None

    def _connect(self) -> client.ApiClient:
        with self._lock:
            if self._api is None:
                cfg = client.Configuration()
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    config.load_kube_config(client_configuration=cfg)
                cfg.connection_pool_maxsize = max(self.concurrency, 4) + SLOW_LANE_WIDTH
                self._api = client.ApiClient(cfg)
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="kubeapi")
                self._slow_pool = ThreadPoolExecutor(max_workers=SLOW_LANE_WIDTH, thread_name_prefix="kubeapi-slow")
            return self._api

    async def _call(self, fn: Callable[[], T], *, slow: bool = False) -> T:
        self._connect()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._slow_pool if slow else self._pool, fn)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        response: str | None = "object",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        return self._connect().call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            response_type=response,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=response is not None,
        )

    async def _unless_gone(self, call: Callable[[], Any]) -> Any:
        try:
            return await self._call(call)
        except ApiException as exc:
            if is_not_found(exc):
                return None
            raise

    async def apply(
        self, obj: Mapping[str, Any], *, force: bool = True, field_manager: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (apiVersion, kind, metadata.name/namespace); the stored object.

        ``field_manager`` applies as another manager than the operator's (to hand a field over).
        Raises ApiException (e.g. 422 for a name the API refuses, 409 on a conflict without force).
        """
        meta = obj["metadata"]
        path = path_for(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query: list[tuple[str, Any]] = [("fieldManager", field_manager or self.field_manager)]
        if force:
            query.append(("force", "true"))
        call = functools.partial(
            self._request, "PATCH", path, body=dict(obj), query=query, content_type="application/apply-patch+yaml"
        )
        return cast(dict[str, Any], await self._call(call, slow=obj["kind"] in SLOW_KINDS))

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``obj`` to its collection (Events, which are never applied); the stored object."""
        meta = obj["metadata"]
        path = path_for(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        call = functools.partial(self._request, "POST", path, body=dict(obj))
        return cast(dict[str, Any], await self._call(call))

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        call = functools.partial(self._request, "GET", path_for(api_version, kind, namespace, name))
        return cast(dict[str, Any] | None, await self._unless_gone(call))

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, *,
        label_selector: str | None = None, field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Items of a collection, optionally filtered by label and field selectors."""
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        call = functools.partial(self._request, "GET", path_for(api_version, kind, namespace), query=query)
        result = cast(dict[str, Any], await self._call(call))
        return cast(list[dict[str, Any]], result.get("items") or [])

    async def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, *, propagation: str = "Background"
    ) -> bool:
        """Delete an object; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        call = functools.partial(self._request, "DELETE", path_for(api_version, kind, namespace, name), body=body)
        return await self._unless_gone(call) is not None

    async def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch of ``.status`` through the status subresource (None values delete keys).

        Returns None when the object is gone.
        """
        path = path_for(api_version, kind, namespace, name) + "/status"
        call = functools.partial(
            self._request, "PATCH", path, body={"status": dict(status)}, content_type="application/merge-patch+json"
        )
        return cast(dict[str, Any] | None, await self._unless_gone(call))

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, body: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """JSON merge patch of an object's main resource (e.g. a Job's mutable ``spec.suspend``,
        which server-side apply of a partial object cannot change without giving up the other
        fields it owns). Returns None when the object is gone."""
        call = functools.partial(
            self._request, "PATCH", path_for(api_version, kind, namespace, name), body=dict(body),
            content_type="application/merge-patch+json",
        )
        return cast(dict[str, Any] | None, await self._unless_gone(call))
