"""`kubemaas operator` flags and settings (no cluster needed)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from kubemaas_operator import cli
from kubemaas_operator.settings import OperatorSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return parser.parse_args(argv)


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMAAS_NAMESPACES", "a, b")
    monkeypatch.setenv("KUBEMAAS_SERVING_IMAGE", "env:1")
    assert cli.build_settings(parse()).namespaces == ["a", "b"]
    assert cli.build_settings(parse("-n", "x", "-n", "y")).namespaces == ["x", "y"]
    assert cli.build_settings(parse("--all-namespaces")).namespaces == []
    settings = cli.build_settings(parse("--serving-image", "flag:2", "--liveness", "http://0.0.0.0:8080/healthz"))
    assert (settings.serving_image, settings.liveness) == ("flag:2", "http://0.0.0.0:8080/healthz")


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse("-n", "x", "--all-namespaces")


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, field in OperatorSettings.model_fields.items() if not field.description]
    assert undocumented == []


def test_help_runs_through_the_console_script() -> None:
    exe = Path(sys.executable).with_name("kubemaas")
    out = subprocess.run([str(exe), "operator", "--help"], capture_output=True, text=True, check=True, timeout=60)
    assert "--all-namespaces" in out.stdout
    assert "--liveness" in out.stdout
