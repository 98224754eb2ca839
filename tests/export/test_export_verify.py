"""An exported directory is compared with a fresh export of its checkpoint (the bundled model's guard)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
from onnx import numpy_helper

from echo.export.verify import compare_exports, fresh_export_differences
from echo.runtime.manifest import sha256_of


def _copy_with(source, target, edit_manifest=None, files=None):
    """A copy of an export with some files rewritten (checksums updated: a consistent directory)."""
    shutil.copytree(source, target)
    manifest_path = target / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for name, write in (files or {}).items():
        write(target / name)
        data["files"][name] = sha256_of(target / name)
    if edit_manifest:
        edit_manifest(data)
    manifest_path.write_text(json.dumps(data))
    return target


def test_an_export_matches_a_fresh_export(tiny_export, tmp_path) -> None:
    assert fresh_export_differences(tiny_export.export, tiny_export.checkpoint, tmp_path) == []
    assert not (tmp_path / "fresh-export").exists()


def test_changed_generation_settings_and_tokenizer_are_reported(tiny_export, tmp_path) -> None:
    def tokenizer(path):
        path.write_text(path.read_text().replace('"<|MASK|>"', '"<|MASKED|>"'))

    changed = _copy_with(
        tiny_export.export,
        tmp_path / "changed",
        edit_manifest=lambda d: d["generation"].update(threshold=0.5),
        files={"tokenizer.json": tokenizer},
    )
    differences = compare_exports(changed, tiny_export.export, tiny_export.checkpoint)
    assert len(differences) == 2
    assert differences[0].startswith("manifest generation: ") and "'threshold': 0.5" in differences[0]
    assert differences[1] == "tokenizer.json: differs from a fresh export"


def test_a_graph_with_other_bytes_but_the_same_outputs_matches(tiny_export, tmp_path) -> None:
    def annotate(path):
        model = onnx.load(str(path))
        model.doc_string = "re-saved by another exporter version"
        onnx.save(model, str(path))

    resaved = _copy_with(tiny_export.export, tmp_path / "resaved", files={"decoder.onnx": annotate})
    assert compare_exports(resaved, tiny_export.export, tiny_export.checkpoint) == []


def test_a_graph_with_other_weights_is_reported(tiny_export, tmp_path) -> None:
    def perturb(path):
        model = onnx.load(str(path))
        biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weights = numpy_helper.to_array(biggest) * 1.05
        biggest.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), biggest.name))
        onnx.save(model, str(path))

    perturbed = _copy_with(tiny_export.export, tmp_path / "perturbed", files={"decoder.onnx": perturb})
    differences = compare_exports(perturbed, tiny_export.export, tiny_export.checkpoint)
    assert len(differences) == 1
    assert differences[0].startswith("decoder.onnx: outputs differ from a fresh export (relative error ")
