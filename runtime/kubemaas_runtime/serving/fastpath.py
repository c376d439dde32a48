"""The hot path: infer and predict requests skip FastAPI's routing and middleware layers.

``ServingApp`` is the FastAPI app ``create_app`` returns. A POST to an infer or predict path is
recognised with a few string operations and handed to the same raw ASGI endpoints FastAPI
has registered, behind the same ``Gateway`` (metrics, auth, body limit), which also renders
their errors as the same ``{"error": ...}`` FastAPI's handler gives. Everything else goes
through FastAPI as usual. The routes stay registered with FastAPI too, so the app behaves
the same when mounted under another ASGI app.
"""

from __future__ import annotations

from fastapi import FastAPI

from kubemaas_runtime.serving.asgi import ASGIApp, Receive, Scope, Send

V2_PREFIX = "/v2/models/"
V2_SUFFIX = "/infer"
V1_PREFIX = "/v1/models/"
V1_SUFFIX = ":predict"


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """Which hot route a POST path is (its template) and its path parameters, or None."""
    if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return "/v2/models/{name}/infer", {"name": parts[0]}
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return "/v2/models/{name}/versions/{version}/infer", {"name": parts[0], "version": parts[2]}
    elif path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
        name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
        if name and "/" not in name:
            return "/v1/models/{name}:predict", {"name": name}
    return None


class HotRoutes:
    """Dispatches a matched hot request to its raw endpoint."""

    def __init__(self, endpoints: dict[str, ASGIApp]) -> None:
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoints[scope["kubemaas.route"]](scope, receive, send)


class ServingApp(FastAPI):
    hot: ASGIApp | None = None
    """Gateway(HotRoutes(endpoints), render_errors=True), set by create_app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot is not None and scope["type"] == "http" and scope["method"] == "POST":
            found = match(scope["path"])
            if found is not None:
                scope["kubemaas.route"], scope["path_params"] = found
                scope["app"] = self
                await self.hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
