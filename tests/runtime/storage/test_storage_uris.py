"""URIs a newcomer types that are wrong: refused at once with one line naming the URI and the
problem (never a traceback, never a connection retried three times), credentials never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemaas_runtime.cli import main
from kubemaas_runtime.storage import StorageError, StorageSettings, fetch
from kubemaas_runtime.storage.uris import HttpLocation, parse_uri


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://[::1/models", "not a valid URI: Invalid IPv6 URL"),
        ("http://127.0.0.1:abc/models", "port 'abc' is not a number"),
        ("http://127.0.0.1:70000/models", "port '70000' is not a number"),
        ("http://model store/x", "contains spaces"),
        ("http://:8080/x", "has no host"),
        ("s3://bucket/run?1", "would be dropped from the key prefix"),
    ],
)
def test_malformed_uris_are_refused_before_any_transfer(uri: str, problem: str, tmp_path: Path) -> None:
    settings = StorageSettings(attempts=1)
    with pytest.raises(StorageError, match=problem):
        fetch(uri, tmp_path / "dest", settings)


def test_the_cli_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "http://[::1/models", str(tmp_path / "dest")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubemaas fetch: 'http://[::1/models': not a valid URI")
    assert err.count("\n") == 1


def test_credentials_in_a_url_are_refused_and_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"credentials in an http\(s\) URI") as info:
        fetch("https://alice:s3cret@models.example/b", tmp_path / "dest")
    assert "s3cret" not in str(info.value)
    assert "'https://***@models.example/b'" in str(info.value)


@pytest.mark.parametrize("uri", ["http://[::1]:8080/m", "https://models.example/m", "http://h:/m", "http://10.0.0.1/m"])
def test_wellformed_http_uris_are_kept(uri: str) -> None:
    assert parse_uri(uri) == HttpLocation(uri=uri, base=uri)


@pytest.mark.parametrize("name", ["bundle.zip", "bundle.tar", "bundle.tar.xz"])
def test_an_archive_format_fetch_does_not_extract_is_named(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(b"PK\x03\x04")
    with pytest.raises(StorageError, match=r"archives are not extracted, only \.tar\.gz/\.tgz"):
        fetch(str(tmp_path / name), tmp_path / "dest")
