"""One-process runs in this process: pruning, the sequence recipe, s3 output + resume, bad arguments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import onnx
import pytest
from moto.server import ThreadedMotoServer
from onnx import numpy_helper
from torch import nn

from kubemaas_runtime.bundle import load_bundle
from kubemaas_runtime.cli import main
from kubemaas_runtime.storage import fetch
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.pruning import prune_model
from kubemaas_runtime.training.recipes import get_recipe
from tests.runtime.training.training_helpers import events_of


def test_prune_model_is_permanent_and_reports_sparsity() -> None:
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    sparsity = prune_model(model, 0.7)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int(m.weight.eq(0).sum()) for m in linears)
    assert sparsity == zeros / (20 * 30 + 30 * 5)
    assert sparsity == pytest.approx(0.7, abs=0.002)
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in model.state_dict())


def test_digits_with_pruning_exports_the_zeros_and_reports_sparsity(
    single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned"
    assert main(["train", "--recipe", "digits", "--output", str(out), "--prune-amount", "0.6"]) == 0
    done = events_of(capsys.readouterr().out)[-1]
    metrics = load_bundle(out).manifest.metrics
    assert metrics == done["artifact"]["metrics"]
    assert metrics["sparsity"] == pytest.approx(0.6, abs=0.002)
    assert metrics["accuracy"] >= 0.9
    assert "unprunedAccuracy" in metrics
    graph = onnx.load(str(out / "model.onnx")).graph
    matrices = [numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) == 2]
    zeros = sum(int((m == 0).sum()) for m in matrices)
    assert zeros / sum(m.size for m in matrices) == pytest.approx(metrics["sparsity"])
    assert json.loads(single_process.read_text()) == {"artifact": done["artifact"]}


def test_the_artifact_reports_the_bytes_a_fetch_writes(
    single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sizeBytes = model.json + every file it lists, i.e. everything in the written folder."""
    out = tmp_path / "digits"
    assert main(["train", "--recipe", "digits", "--output", str(out), "--epochs", "1"]) == 0
    done = events_of(capsys.readouterr().out)[-1]
    on_disk = sorted(p.name for p in out.iterdir())
    assert on_disk == ["checkpoint.pt", "eval.npz", "model.json", "model.onnx"]
    assert done["artifact"]["sizeBytes"] == sum((out / name).stat().st_size for name in on_disk)
    assert json.loads(single_process.read_text())["artifact"]["sizeBytes"] == done["artifact"]["sizeBytes"]


def test_a_recipe_refuses_another_recipes_parameters() -> None:
    sequence_params = get_recipe("sequence").params({"train_size": "64"})
    with pytest.raises(TrainingError, match="recipe digits: expected DigitsParams, got SequenceParams"):
        get_recipe("digits").model(sequence_params)


def test_sequence_recipe_learns_and_exports_int64_tokens(
    single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seq"
    argv = ["train", "--recipe", "sequence", "--output", str(out), "--epochs", "4", "--set", "train_size=2000"]
    assert main(argv) == 0
    events = events_of(capsys.readouterr().out)
    bundle = load_bundle(out)
    assert [(t.name, t.datatype, t.shape) for t in bundle.manifest.inputs] == [("tokens", "INT64", [-1, 24])]
    assert bundle.manifest.labels == ["token0", "token1", "token2", "token3"]
    assert bundle.manifest.metrics["accuracy"] >= 0.9  # chance is 0.25
    with np.load(bundle.eval_path, allow_pickle=False) as data:
        assert data["inputs"].dtype == np.int64
        assert data["inputs"].shape == (1000, 24)
    assert events[-1]["event"] == "done"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server mode stands in for S3/MinIO: a real HTTP S3 emulator on loopback."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio123")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("KUBEMAAS_S3_ENDPOINT", endpoint)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="runs")
    try:
        yield endpoint
    finally:
        server.stop()


def test_s3_output_then_rerun_resumes_from_the_s3_checkpoint(
    single_process: Path, s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "s3://runs/digits/1"
    assert main(["train", "--recipe", "digits", "--output", uri, "--epochs", "2"]) == 0
    first = events_of(capsys.readouterr().out)[-1]
    assert fetch(uri, tmp_path / "fetched").digest == first["artifact"]["sha256"]
    assert main(["train", "--recipe", "digits", "--output", uri, "--epochs", "3"]) == 0
    events = events_of(capsys.readouterr().out)
    assert events[0] == {"event": "resume", "epoch": 2, "step": 44, "uri": uri}
    assert [e["epoch"] for e in events if e["event"] == "progress"] == [3]


def test_a_new_run_ignores_the_previous_runs_checkpoint(
    single_process: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restarted gang (same TrainingJob uid) resumes; a re-applied TrainingJob (new uid) trains afresh."""
    out = tmp_path / "runs"
    monkeypatch.setenv("KUBEMAAS_SOURCE_NAME", "digits")
    monkeypatch.setenv("KUBEMAAS_SOURCE_UID", "uid-1")
    assert main(["train", "--recipe", "digits", "--output", str(out), "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--recipe", "digits", "--output", str(out), "--epochs", "3"]) == 0
    resumed = events_of(capsys.readouterr().out)
    assert resumed[0]["event"] == "resume"
    assert [e["epoch"] for e in resumed if e["event"] == "progress"] == [3]
    monkeypatch.setenv("KUBEMAAS_SOURCE_UID", "uid-2")
    assert main(["train", "--recipe", "digits", "--output", str(out), "--epochs", "3"]) == 0
    fresh = events_of(capsys.readouterr().out)
    assert fresh[0] == {"event": "fresh-start", "reason": "checkpoint from another run",
                        "previousRun": "uid-1", "run": "uid-2"}
    assert [e["epoch"] for e in fresh if e["event"] == "progress"] == [1, 2, 3]
    source = load_bundle(out).manifest.source
    assert source is not None
    assert (source.kind, source.name, source.uid) == ("TrainingJob", "digits", "uid-2")


def test_checkpoint_of_another_recipe_is_refused(
    single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shared"
    assert main(["train", "--recipe", "digits", "--output", str(out), "--epochs", "1"]) == 0
    assert main(["train", "--recipe", "sequence", "--output", str(out), "--epochs", "1"]) == 1
    assert f"{out}/checkpoint.pt was written by recipe 'digits', not 'sequence'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--recipe", "digits", "--epochs", "0"], "--epochs: Input should be greater than or equal to 1 (got 0)"),
        (["--recipe", "nope"], "--recipe 'nope': unknown recipe; choose one of ['digits', 'sequence', 'textgen']"),
        (["--recipe", "digits", "--set", "hidden=big"], "--set hidden='big'"),
        (["--recipe", "digits", "--set", "Bad"], "--set 'Bad': expected key=value"),
        (["--recipe", "digits", "--name", "Not_OK"], "--name: String should match pattern"),
        (["--recipe", "digits", "--prune-amount", "1.5"], "--prune-amount: Input should be less than 1"),
        (["--recipe", "digits", "--output", "http://models.local/x"], "--output: Value error, 'http://models.local/x' is read-only"),
        (["--recipe", "digits", "--output", "ftp://h/x"], "--output: Value error, 'ftp://h/x': unsupported scheme 'ftp'"),
    ],
)
def test_bad_arguments_are_named(
    args: list[str], problem: str, single_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = [] if "--output" in args else ["--output", str(tmp_path / "o")]
    assert main(["train", *args, *output]) == 1
    assert problem in capsys.readouterr().err
    assert problem in json.loads(single_process.read_text())["error"]
