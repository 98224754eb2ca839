"""Exporting at scale: one copy of the weights during a float16 export, and float16 overflow refused.
Weights in external data files (forced on a tiny model, as a > 2 GB graph gets them) are tested on
the Qwen-format pipeline's export: tests/qwen_format/test_pipeline.py."""

from __future__ import annotations

import pytest
import torch

from echo.errors import UserError
from echo.export import exporter
from echo.export.random_tiny import make_random_checkpoint
from echo.training.checkpoint import load_checkpoint, save_checkpoint


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
