"""The one router: every endpoint of every protocol surface is a raw ASGI-level function
``async (Call) -> Reply`` registered here, and the ``Gateway`` is the only place that sends
answers and renders errors.

A template is matched segment by segment: a literal segment must be equal, ``{x}`` captures a
non-empty segment and ``{x}:suffix`` one that ends in ``:suffix`` (KServe v1's ``:predict``).
Among templates of the same length the one with more literal segments wins, so
``/v2/models/stats`` is not taken for a model named ``stats``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubemaas_runtime.serving.asgi import JSON, Receive, Scope
from kubemaas_runtime.serving.errors import MethodNotAllowed, NotFound


@dataclass
class Call:
    """One request as an endpoint sees it."""

    scope: Scope
    receive: Receive
    params: dict[str, str]
    """Path parameters by name."""


@dataclass
class Reply:
    """What an endpoint answers; the gateway adds length, encoding and connection headers."""

    body: bytes
    status: int = 200
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_reply(doc: Any, status: int = 200) -> Reply:
    """``doc`` serialized by orjson (numpy arrays included)."""
    return Reply(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status)


Endpoint = Callable[[Call], Awaitable[Reply]]


@dataclass
class _Route:
    template: str
    segments: list[tuple[str, str, str]]
    """(kind, name or literal, suffix) per segment; kind is ``lit`` or ``var``."""
    methods: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def literals(self) -> int:
        return sum(1 for kind, _, _ in self.segments if kind == "lit")

    def match(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for (kind, value, suffix), part in zip(self.segments, parts, strict=True):
            if kind == "lit":
                if part != value:
                    return None
                continue
            if suffix:
                if not part.endswith(suffix) or len(part) == len(suffix):
                    return None
                part = part[: -len(suffix)]
            elif not part:
                return None
            params[value] = part
        return params


def _parse(template: str) -> list[tuple[str, str, str]]:
    segments = []
    for part in template.split("/"):
        if part.startswith("{"):
            name, _, suffix = part[1:].partition("}")
            segments.append(("var", name, suffix))
        else:
            segments.append(("lit", part, ""))
    return segments


class Router:
    """Templates by segment count; see the module docstring."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._by_length: dict[int, list[_Route]] = {}

    def add(self, method: str, template: str, endpoint: Endpoint) -> None:
        """Register ``endpoint`` for ``method`` on ``template``; raises ``ValueError`` on a duplicate."""
        route = self._routes.get(template)
        if route is None:
            route = self._routes[template] = _Route(template, _parse(template))
            bucket = self._by_length.setdefault(len(route.segments), [])
            bucket.append(route)
            bucket.sort(key=lambda r: -r.literals)
        if method in route.methods:
            raise ValueError(f"{method} {template} is registered twice")
        route.methods[method] = endpoint

    @property
    def templates(self) -> list[str]:
        """Every registered template, in registration order."""
        return list(self._routes)

    def match(self, method: str, path: str) -> tuple[str, Endpoint, dict[str, str]]:
        """The template, endpoint and path parameters for a request; raises ``NotFound`` (404)
        or ``MethodNotAllowed`` (405, when the path exists for another method)."""
        parts = path.split("/")
        other_method = False
        for route in self._by_length.get(len(parts), ()):
            params = route.match(parts)
            if params is None:
                continue
            endpoint = route.methods.get(method)
            if endpoint is None:
                other_method = True
                continue
            return route.template, endpoint, params
        if other_method:
            raise MethodNotAllowed("Method Not Allowed")
        raise NotFound("Not Found")
