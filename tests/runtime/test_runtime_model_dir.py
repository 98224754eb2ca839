"""A bad model directory is refused on load with one clear line, never a traceback mid-report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from echo.errors import UserError
from echo.runtime import Engine, load_manifest


@pytest.fixture
def copy(tiny, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny.export, target)
    return target


def _edit_manifest(directory, change) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_good_directory_loads_with_its_checksums(tiny) -> None:
    manifest = load_manifest(tiny.export)
    assert manifest.generation.decode == "onestep"
    assert set(manifest.files) == {
        "vision.onnx",
        "decoder.onnx",
        "kv_prefix.onnx",
        "embeddings.npy",
        "tokenizer.json",
    }


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(UserError, match=r"model directory .*nowhere does not exist"):
        Engine.load(tmp_path / "nowhere")


def test_missing_manifest(tmp_path) -> None:
    with pytest.raises(
        UserError, match=r"is not an exported model directory \(no manifest.json\); run `echo-train export`"
    ):
        Engine.load(tmp_path)


def test_missing_graph(copy) -> None:
    (copy / "decoder.onnx").unlink()
    with pytest.raises(
        UserError, match=r"missing decoder.onnx \(listed in manifest.json\); re-export the model"
    ):
        Engine.load(copy)


def test_checksum_mismatch(copy) -> None:
    with (copy / "vision.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match=r"vision.onnx: checksum mismatch"):
        Engine.load(copy)


def test_checksums_can_be_skipped_but_a_broken_graph_is_still_refused(copy) -> None:
    (copy / "vision.onnx").write_bytes(b"not a graph")
    with pytest.raises(UserError, match=r"vision.onnx: onnxruntime cannot load this graph"):
        Engine.load(copy, verify=False)


def test_swapped_graph_is_refused_by_its_inputs(copy) -> None:
    shutil.copyfile(copy / "vision.onnx", copy / "decoder.onnx")
    with pytest.raises(
        UserError, match=r"decoder.onnx: graph inputs \['pixel_values'.* are not the expected"
    ):
        Engine.load(copy, verify=False)


def test_wrong_embeddings_shape(copy) -> None:
    np.save(copy / "embeddings.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(UserError, match=r"embeddings.npy: holds float32 \(3, 4\), the manifest says float32"):
        Engine.load(copy, verify=False)


def test_unreadable_manifest(copy) -> None:
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"manifest.json: cannot read JSON"):
        Engine.load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other/9"), r"format 'other/9' is not 'echo-onnx/1'"),
        (lambda d: d.pop("tokens"), r"missing field 'tokens'"),
        (
            lambda d: d["generation"].update(decode="beam"),
            r"decode 'beam' is not one of ar, multistep, onestep, refine",
        ),
        (lambda d: d["generation"].update(threshold=1.5), r"threshold 1.5 is outside \[0, 1\]"),
        (lambda d: d.update(dtype="bfloat16"), r"dtype 'bfloat16' is not one of float32, float16"),
        (lambda d: d["files"].pop("tokenizer.json"), r"files does not list tokenizer.json"),
        (lambda d: d["tokens"].update(colour=1), r"malformed"),
    ],
)
def test_malformed_manifest_fields(copy, change, message) -> None:
    _edit_manifest(copy, change)
    with pytest.raises(UserError, match=message):
        Engine.load(copy)


def test_an_unavailable_provider_is_refused_on_load(tiny) -> None:
    with pytest.raises(UserError, match="CUDAExecutionProvider is not available"):
        Engine.load(tiny.export, providers="cuda")
