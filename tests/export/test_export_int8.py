"""`echo-train export --int8`: the decoder's matrix products in int8, served by the same engine."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

from echo.errors import UserError
from echo.export.exporter import export_checkpoint
from echo.export.parity import TOLERANCE, graph_parity
from echo.export.verify import fresh_export_differences
from echo.runtime import Engine
from echo.runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def int8_export(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "student-int8"
    export_checkpoint(tiny_export.checkpoint, out, int8=True)
    return out


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_the_decoder_multiplies_in_int8_and_the_vision_graph_stays_float(tiny_export, int8_export) -> None:
    float_ops, int8_ops = _ops(tiny_export.export / "decoder.onnx"), _ops(int8_export / "decoder.onnx")
    assert int8_ops["MatMulInteger"] > 0 and int8_ops["DynamicQuantizeLinear"] > 0
    assert int8_ops["MatMul"] < float_ops["MatMul"]  # the weight products moved to int8
    vision = (int8_export / "vision.onnx").read_bytes()
    assert vision == (tiny_export.export / "vision.onnx").read_bytes()


def test_the_manifest_says_int8_and_versions_it_apart(tiny_export, int8_export) -> None:
    manifest, float_manifest = load_manifest(int8_export), load_manifest(tiny_export.export)
    assert (manifest.quantization, manifest.dtype) == ("int8-dynamic", "float32")
    assert manifest.version != float_manifest.version
    assert float_manifest.quantization is None
    assert "quantization" not in json.loads((tiny_export.export / "manifest.json").read_text())


def test_int8_graphs_stay_near_the_float_model_and_the_engine_serves_them(tiny_export, int8_export) -> None:
    errors = graph_parity(tiny_export.model, int8_export)
    assert errors["vision"] < TOLERANCE["float32"]
    assert 0 < errors["step"] < TOLERANCE["int8-dynamic"]
    engine = Engine.load(int8_export, providers="cpu", threads=1)
    image = np.random.default_rng(5).random((200, 180)).astype(np.float32)
    report = engine.generate(image)
    assert report.decode == "onestep" and report.tokens > 0 and report.forwards > 0


def test_an_int8_export_matches_a_fresh_int8_export(tiny_export, int8_export, tmp_path) -> None:
    assert fresh_export_differences(int8_export, tiny_export.checkpoint, tmp_path) == []


def test_int8_and_float16_together_are_refused(tiny_export, tmp_path) -> None:
    with pytest.raises(UserError, match="--int8 quantises a float32 graph: leave out --fp16"):
        export_checkpoint(tiny_export.checkpoint, tmp_path / "out", int8=True, fp16=True)
    assert not (tmp_path / "out").exists()


def test_a_manifest_with_an_unknown_quantization_is_refused(int8_export, tmp_path) -> None:
    data = json.loads((int8_export / "manifest.json").read_text())
    data["quantization"] = "int4"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="quantization 'int4' is not one of None, int8-dynamic"):
        load_manifest(tmp_path, verify=False)
