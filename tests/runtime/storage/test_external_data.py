"""External data (the weights file of every ONNX model over 2 GB): listed and verified, or refused.

Real ONNX files written by ``onnx.save_model(save_as_external_data=True)``, loaded by the real
serving loader (``serving.model.load_model``, which opens a real ONNX Runtime session).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kubemaas_runtime.bundle import (
    MANIFEST,
    MODEL,
    BundleError,
    Manifest,
    TensorSpec,
    check_external_data,
    external_data_locations,
    load_bundle,
    write_manifest,
)
from kubemaas_runtime.cli import main
from kubemaas_runtime.serving.model import load_model
from kubemaas_runtime.storage import StorageError, fetch

WEIGHTS = "weights.bin"


def _graph() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")  # raw_data: movable out
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(directory: Path, location: str = WEIGHTS) -> Path:
    """model.onnx whose weight lives in ``location`` (written beside it, then the reference edited)."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        _graph(), str(directory / MODEL), save_as_external_data=True, all_tensors_to_one_file=True,
        location=WEIGHTS, size_threshold=0,
    )
    if location != WEIGHTS:
        model = onnx.load(str(directory / MODEL), load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save_model(model, str(directory / MODEL))
    return directory / MODEL


def _manifest() -> Manifest:
    return Manifest(
        name="external",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="output", datatype="FP32", shape=[-1, 3])],
    )


def test_locations_are_read_without_the_weights(tmp_path: Path) -> None:
    path = _save(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS).unlink()  # not needed to list the references
    assert external_data_locations(path) == [WEIGHTS]


def test_inline_model_has_no_external_data(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    onnx.save_model(_graph(), str(tmp_path / "m" / MODEL))
    assert external_data_locations(tmp_path / "m" / MODEL) == []


def test_listed_external_data_is_fetched_verified_and_served(tmp_path: Path) -> None:
    _save(tmp_path / "src")
    bundle = write_manifest(tmp_path / "src", _manifest())
    assert sorted(bundle.manifest.files) == [MODEL, WEIGHTS]
    got = fetch(str(tmp_path / "src"), tmp_path / "dest")
    assert check_external_data(got.path, MODEL, got.manifest) == [WEIGHTS]
    model = load_model(tmp_path / "dest")
    out = model.session.run(None, {"input": np.ones((1, 4), np.float32)})[0]
    assert out.tolist() == [[18.0, 22.0, 26.0]]  # column sums of arange(12).reshape(4, 3)


def test_unlisted_external_data_is_refused_naming_it(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    write_manifest(tmp_path / "b", _manifest(), files=[MODEL])
    with pytest.raises(BundleError, match=rf"references external data '{WEIGHTS}', which model\.json does not list"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match=rf"'{WEIGHTS}', which model\.json does not list"):
        load_model(tmp_path / "b")


def test_fetch_refuses_a_bundle_whose_external_data_is_unlisted(tmp_path: Path) -> None:
    _save(tmp_path / "src")
    write_manifest(tmp_path / "src", _manifest(), files=[MODEL])
    with pytest.raises(StorageError, match=rf"fetch {tmp_path / 'src'}: .*'{WEIGHTS}', which model\.json does not list"):
        fetch(str(tmp_path / "src"), tmp_path / "dest")


def test_external_data_replaced_after_the_manifest_is_refused(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    write_manifest(tmp_path / "b", _manifest())
    weights = tmp_path / "b" / WEIGHTS
    weights.write_bytes(np.full(12, 7, np.float32).tobytes())  # same size, other weights
    with pytest.raises(BundleError, match=rf"{WEIGHTS}: sha256 .* does not match model\.json"):
        load_model(tmp_path / "b")


def test_external_data_in_a_subfolder_is_resolved_beside_the_model(tmp_path: Path) -> None:
    """Locations are relative to the model file's folder: a decoder in ``onnx/`` names ``onnx/w.bin``."""
    _save(tmp_path / "b" / "onnx")
    raw = {"onnx/model.onnx", "onnx/weights.bin"}
    bundle = write_manifest(tmp_path / "b", _manifest(), files=sorted(raw))
    assert check_external_data(tmp_path / "b", "onnx/model.onnx", bundle.manifest) == ["onnx/weights.bin"]
    manifest = bundle.manifest.model_copy(update={"files": {"onnx/model.onnx": bundle.manifest.files["onnx/model.onnx"]}})
    with pytest.raises(BundleError, match=r"'onnx/weights\.bin', which model\.json does not list"):
        check_external_data(tmp_path / "b", "onnx/model.onnx", manifest)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_escaping_locations_are_refused_with_or_without_a_manifest(location: str, tmp_path: Path) -> None:
    _save(tmp_path / "b", location)
    shutil.copyfile(tmp_path / "b" / WEIGHTS, tmp_path / "outside.bin")  # there to be loaded, were it allowed
    with pytest.raises(BundleError, match=r"external data location refused: unsafe path"):
        load_model(tmp_path / "b")
    write_manifest(tmp_path / "b", _manifest(), files=[MODEL, WEIGHTS])
    with pytest.raises(BundleError, match=r"external data location refused: unsafe path"):
        load_bundle(tmp_path / "b")


def test_bare_folder_serves_external_data_inside_it(tmp_path: Path) -> None:
    _save(tmp_path / "bare")
    assert not (tmp_path / "bare" / MANIFEST).exists()
    model = load_model(tmp_path / "bare")
    assert model.session.run(None, {"input": np.ones((1, 4), np.float32)})[0].tolist() == [[18.0, 22.0, 26.0]]


def test_bare_folder_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    """ONNX Runtime follows the link and loads weights from anywhere; the folder is the boundary."""
    _save(tmp_path / "bare")
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "bare" / WEIGHTS, tmp_path / "elsewhere" / WEIGHTS)
    os.symlink(tmp_path / "elsewhere" / WEIGHTS, tmp_path / "bare" / WEIGHTS)
    with pytest.raises(BundleError, match=rf"external data '{WEIGHTS}' resolves to {tmp_path / 'elsewhere' / WEIGHTS}, outside"):
        load_model(tmp_path / "bare")


def test_manifest_written_before_the_weights_were_added_is_refused(tmp_path: Path) -> None:
    """The KServe-report shape: model.json lists model.onnx only; weights.bin arrived later."""
    _save(tmp_path / "b")
    bundle = write_manifest(tmp_path / "b", _manifest(), files=[MODEL])
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["files"].keys() == {MODEL}
    with pytest.raises(BundleError, match=WEIGHTS):
        load_bundle(bundle.path)


def test_compress_refuses_unlisted_external_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path / "b")
    write_manifest(tmp_path / "b", _manifest(), files=[MODEL])
    assert main(["compress", "--bundle", str(tmp_path / "b"), "--output", str(tmp_path / "out")]) == 2
    assert f"references external data '{WEIGHTS}', which model.json does not list" in capsys.readouterr().err
