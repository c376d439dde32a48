"""Optional bearer-token auth: the token comes from a file (a mounted Secret) or the env;
health probes and /metrics stay open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.runtime.serving.conftest import Server, start_server

TOKEN = "s3cr3t-token"
BODY = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]}


@pytest.fixture(scope="module")
def auth_server(mlp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    secret = tmp_path_factory.mktemp("secret") / "token"
    secret.write_text(TOKEN + "\n")
    server = start_server(mlp_dir, tmp_path_factory.mktemp("logs") / "auth.log", auth_token_file=str(secret))
    yield server
    server.stop()


def test_missing_token_is_401(auth_server: Server) -> None:
    r = httpx.post(auth_server.url + "/v2/models/digits-mlp/infer", json=BODY)
    assert r.status_code == 401
    assert r.json() == {"error": "missing bearer token: send 'Authorization: Bearer <token>'"}
    assert r.headers["www-authenticate"] == 'Bearer realm="kubemaas"'
    assert httpx.get(auth_server.url + "/v2/models/digits-mlp").status_code == 401


def test_invalid_token_is_401(auth_server: Server) -> None:
    for value in (f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"):
        r = httpx.post(auth_server.url + "/v2/models/digits-mlp/infer", json=BODY, headers={"Authorization": value})
        assert (r.status_code, r.json()) == (401, {"error": "invalid bearer token"})


def test_valid_token_is_served(auth_server: Server) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(auth_server.url + "/v2/models/digits-mlp/infer", json=BODY, headers=headers)
    assert r.status_code == 200, r.text
    client = triton.InferenceServerClient(auth_server.host_port)
    inp = triton.InferInput("x", [1, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 8), np.float32))
    assert client.infer("digits-mlp", [inp], headers=headers).as_numpy("probs").shape == (1, 3)
    with pytest.raises(InferenceServerException, match="missing bearer token"):
        client.infer("digits-mlp", [inp])


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/metrics"])
def test_probes_and_metrics_stay_open(auth_server: Server, path: str) -> None:
    assert httpx.get(auth_server.url + path).status_code == 200


def test_token_from_env(mlp_dir: Path, tmp_path: Path) -> None:
    server = start_server(mlp_dir, tmp_path / "env-auth.log", auth_token="from-env")
    try:
        url = server.url + "/v2/models/digits-mlp"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer from-env"}).status_code == 200
    finally:
        server.stop()
