"""HTTP probes and condition reads the harness polls with."""

from __future__ import annotations

import ssl
import urllib.request
from typing import Any


def http_get(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> bytes:
    """GET `url` (optionally with a bearer token) with a 5 s timeout; the body."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        body: bytes = response.read()
        return body


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    """The status of condition `kind` in obj.status.conditions, if any."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None
