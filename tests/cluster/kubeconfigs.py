"""Kubeconfig files for the test cluster's clients: a bearer token or a client certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.cluster.certificates import write_private

CLUSTER = "kubemaas-test"


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    user: str,
    token: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Path:
    """Write a one-context kubeconfig (mode 0600) for `user` at `server`; return `path`.

    Exactly one credential: `token`, or `client_cert` with `client_key`. Raises ValueError otherwise.
    """
    if (token is None) == (client_cert is None or client_key is None):
        raise ValueError(
            f"kubeconfig for {user!r}: give a token or a client certificate and key, not both or neither"
        )
    credentials: dict[str, Any] = (
        {"token": token}
        if token is not None
        else {"client-certificate": str(client_cert), "client-key": str(client_key)}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": user}}],
        "current-context": CLUSTER,
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path
