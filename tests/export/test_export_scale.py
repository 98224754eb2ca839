"""Exporting at scale: weights in external data files (forced on a tiny model, as a > 2 GB graph
gets them), one copy of the weights during a float16 export, and float16 overflow refused."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch

from echo.cli import main
from echo.errors import UserError
from echo.export import exporter
from echo.export.random_tiny import make_random_checkpoint
from echo.runtime import DecodeOptions, Engine
from echo.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def external(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("external") / "student-external"
    with pytest.MonkeyPatch.context() as monkeypatch:
        argv = ["echo-train", "export", "--checkpoint", str(tiny_export.checkpoint), "--out", str(out)]
        monkeypatch.setattr(sys, "argv", [*argv, "--external-data", "always"])
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert (exit_info.value.code or 0) == 0
    return out


@pytest.mark.slow
def test_forced_external_data_puts_every_graphs_weights_beside_it(external) -> None:
    files = json.loads((external / "manifest.json").read_text())["files"]
    for graph in ("vision.onnx", "decoder.onnx"):
        data = f"{graph}.data"
        assert data in files and (external / data).stat().st_size > 10_000
        model = onnx.load(str(external / graph), load_external_data=False)
        locations = {
            entry.value
            for tensor in model.graph.initializer
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {data}
        assert (external / graph).stat().st_size < (external / data).stat().st_size


@pytest.mark.slow
def test_an_external_data_export_serves_the_same_tokens(tiny_export, external) -> None:
    inline = Engine.load(tiny_export.export, warm_up=False)
    split = Engine.load(external, warm_up=False)
    rng = np.random.default_rng(5)
    images = [rng.random((200, 180)).astype(np.float32), rng.random((90, 120)).astype(np.float32)]
    for decode in ("onestep", "multistep", "ar"):
        options = DecodeOptions(decode=decode)
        assert [r.token_ids for r in split.generate_batch(images, options=options)] == [
            r.token_ids for r in inline.generate_batch(images, options=options)
        ]


def test_a_float16_export_converts_the_loaded_model_in_place(tiny_export, tmp_path, monkeypatch) -> None:
    """The float32 references are taken first, then the same module becomes float16: no copy."""
    loaded, exported = [], []

    def load(path):
        loaded.append(load_checkpoint(path))
        return loaded[-1]

    def export_vision(model, *args):
        exported.append(model)
        raise UserError("stop after the conversion")

    monkeypatch.setattr(exporter, "load_checkpoint", load)
    monkeypatch.setattr(exporter, "export_vision", export_vision)
    with pytest.raises(UserError, match="stop after the conversion"):
        exporter.export_checkpoint(tiny_export.checkpoint, tmp_path / "fp16", fp16=True)
    assert exported[0] is loaded[0][0]
    assert {p.dtype for p in exported[0].parameters()} == {torch.float16}


def test_activations_beyond_float16_refuse_a_float16_export(tmp_path) -> None:
    checkpoint = make_random_checkpoint(tmp_path / "ar", "ar", seed=5, max_new_tokens=8)
    model, tokenizer, spec = load_checkpoint(checkpoint)
    with torch.no_grad():  # the MLP input x 1e4: its gate x up product passes 65504 (as bf16 weights can)
        model.model.layers[0].post_attention_layernorm.weight.mul_(1e4)
    save_checkpoint(model, tokenizer, spec, tmp_path / "hot")
    with pytest.raises(UserError) as error:
        exporter.export_checkpoint(tmp_path / "hot", tmp_path / "out", fp16=True)
    message = str(error.value)
    assert message.startswith(
        "float16 cannot hold this model's activations: model.layers.0.mlp.down_proj reaches"
    )
    assert message.endswith("export float32 instead (without --fp16)")
    assert not (tmp_path / "out").exists()


def test_inf_or_nan_from_a_float16_graph_is_an_overflow_error() -> None:
    with pytest.raises(UserError, match=r"^the float16 decoder graph .*\(inf or nan\).*without --fp16\)$"):
        exporter.check_parity({"vision": 1e-3, "decoder": float("inf")}, "float16")
    with pytest.raises(UserError, match=r"relative error 5\.00e-02 > 2e-02"):
        exporter.check_parity({"vision": 5e-2}, "float16")
    with pytest.raises(UserError, match="mistranslates"):
        exporter.check_parity({"step": 1e-3}, "float32")
    exporter.check_parity({"vision": 1e-2, "step": 1e-3}, "float16")


@pytest.mark.slow
def test_an_external_data_export_matches_a_fresh_export(tiny_export, external, tmp_path) -> None:
    from echo.export.verify import fresh_export_differences

    assert fresh_export_differences(external, tiny_export.checkpoint, tmp_path) == []
