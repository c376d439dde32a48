"""The only module that talks to the Kubernetes API.

Generic, dict-in/dict-out helpers over the official (synchronous) client, run in a
bounded thread pool so the kopf event loop never blocks:

* ``apply(obj)``: server-side apply (``application/apply-patch+yaml``) with the operator's
  field manager and ``force=True`` -- idempotent create-or-patch of a child object.
* ``get`` / ``list_objects`` / ``delete`` / ``patch_status`` / ``pod_log``.

Objects are addressed by ``apiVersion`` + ``kind``; plurals come from a small table of the
kinds the operator touches (plus the naive ``kind.lower() + "s"`` for anything else).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = [
    "ApiException",
    "apply",
    "configure",
    "delete",
    "get",
    "is_not_found",
    "list_objects",
    "patch_status",
    "pod_log",
]

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
"""Threads for writes of the SLOW_KINDS, on top of ``api_concurrency``."""

_lock = threading.Lock()
_state: dict[str, Any] = {"api": None, "pool": None, "slow_pool": None, "field_manager": "kubemaas-operator"}


def configure(*, field_manager: str = "kubemaas-operator", concurrency: int = 16) -> None:
    """Load credentials (in-cluster when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG)."""
    with _lock:
        if _state["api"] is not None:
            _state["field_manager"] = field_manager
            return
        cfg = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(client_configuration=cfg)
        cfg.connection_pool_maxsize = max(concurrency, 4) + SLOW_LANE_WIDTH
        _state["api"] = client.ApiClient(cfg)
        _state["pool"] = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kubeapi")
        _state["slow_pool"] = ThreadPoolExecutor(max_workers=SLOW_LANE_WIDTH, thread_name_prefix="kubeapi-slow")
        _state["field_manager"] = field_manager


def _api() -> client.ApiClient:
    if _state["api"] is None:
        configure()
    return cast(client.ApiClient, _state["api"])


async def _call(fn: Callable[[], T], *, slow: bool = False) -> T:
    if _state["pool"] is None:
        configure()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_state["slow_pool" if slow else "pool"], fn)


def path_for(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection (no name) or an object."""
    plural = PLURALS.get(kind, kind.lower() + "s")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{ns}/{plural}{tail}"


def _request(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str = "application/json",
    response: str | None = "object",
) -> Any:
    api = _api()
    headers = {"Accept": "application/json", "Content-Type": content_type}
    return api.call_api(
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


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


async def apply(obj: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
    """Server-side apply ``obj`` (must carry apiVersion, kind, metadata.name/namespace)."""
    meta = obj["metadata"]
    path = path_for(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
    query: list[tuple[str, Any]] = [("fieldManager", _state["field_manager"])]
    if force:
        query.append(("force", "true"))
    call = functools.partial(
        _request, "PATCH", path, body=dict(obj), query=query, content_type="application/apply-patch+yaml"
    )
    return cast(dict[str, Any], await _call(call, slow=obj["kind"] in SLOW_KINDS))


async def _unless_gone(call: Any) -> Any:
    """Run an API call; None when its object does not exist (404)."""
    try:
        return await _call(call)
    except ApiException as exc:
        if is_not_found(exc):
            return None
        raise


async def get(api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The object as a dict, or None when it does not exist."""
    call = functools.partial(_request, "GET", path_for(api_version, kind, namespace, name))
    return cast(dict[str, Any] | None, await _unless_gone(call))


async def list_objects(
    api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
) -> list[dict[str, Any]]:
    """Items of a collection, optionally filtered by a label selector."""
    query = [("labelSelector", label_selector)] if label_selector else []
    call = functools.partial(_request, "GET", path_for(api_version, kind, namespace), query=query)
    result = cast(dict[str, Any], await _call(call))
    return cast(list[dict[str, Any]], result.get("items") or [])


async def delete(
    api_version: str, kind: str, namespace: str | None, name: str, *, propagation: str = "Background"
) -> bool:
    """Delete an object; False when it was already gone."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
    call = functools.partial(_request, "DELETE", path_for(api_version, kind, namespace, name), body=body)
    try:
        await _call(call)
    except ApiException as exc:
        if is_not_found(exc):
            return False
        raise
    return True


async def patch_status(
    api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """JSON merge patch of ``.status`` through the status subresource (None values delete keys).

    Returns None when the object is gone.
    """
    path = path_for(api_version, kind, namespace, name) + "/status"
    call = functools.partial(
        _request, "PATCH", path, body={"status": dict(status)}, content_type="application/merge-patch+json"
    )
    return cast(dict[str, Any] | None, await _unless_gone(call))


async def pod_log(namespace: str, name: str, *, container: str | None = None, tail_lines: int = 50) -> str:
    """The tail of a pod's log ("" when the pod is gone)."""
    query: list[tuple[str, Any]] = [("tailLines", tail_lines)]
    if container:
        query.append(("container", container))
    path = path_for("v1", "Pod", namespace, name) + "/log"

    def read() -> str:
        raw = _request("GET", path, query=query, response=None)  # raw urllib3 response: no JSON guessing
        return cast(bytes, raw.data).decode("utf-8", errors="replace")

    try:
        return await _call(read)
    except ApiException as exc:
        if exc.status in (400, 404):
            return ""
        raise


# --- TrainingJob section (added by the TrainingJob handlers' owner) -------------------------------


async def merge_patch(
    api_version: str, kind: str, namespace: str | None, name: str, body: Mapping[str, Any]
) -> dict[str, Any] | None:
    """JSON merge patch of an object's main resource (e.g. a Job's mutable ``spec.suspend``,
    which server-side apply of a partial object cannot change without giving up the other
    fields it owns). Returns None when the object is gone."""
    call = functools.partial(
        _request, "PATCH", path_for(api_version, kind, namespace, name), body=dict(body),
        content_type="application/merge-patch+json",
    )
    try:
        return cast(dict[str, Any], await _call(call))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
