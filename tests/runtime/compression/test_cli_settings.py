"""``kubemaas compress`` with bad flags: one line naming each flag and its value, exit 2 (it printed
pydantic's multi-line dump with a documentation link)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemaas_runtime.cli import main


def test_bad_flags_are_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compress", "--bundle", str(tmp_path / "b"), "--output", str(tmp_path / "o"),
            "--latency-runs", "0", "--calibration-rows", "-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == ("kubemaas compress: invalid settings: --latency-runs (KUBEMAAS_LATENCY_RUNS) 0: Input should be "
                   "greater than or equal to 1; --calibration-rows (KUBEMAAS_CALIBRATION_ROWS) -1: Input should be "
                   "greater than or equal to 1\n")


def test_a_text_generation_mode_on_a_tensor_bundle_says_which_modes_fit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "--bundle", str(tmp_path / "b"), "--output", str(tmp_path / "o"), "--mode", "int4"]) == 2
    err = capsys.readouterr().err
    assert "--mode (KUBEMAAS_MODE) 'int4': int4/int8 are for text-generation bundles" in err
    assert "int8-dynamic" in err
    assert err.count("\n") == 1
