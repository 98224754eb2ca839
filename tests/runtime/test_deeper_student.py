"""A student deeper than its teacher (`echo-train dcd --student-layers`) exports and serves with the
teacher inside it as the draft gate's re-decode model: each graph is its own model's depth, and the
vision tower, which stage 3 leaves as the teacher's, is still run once for both."""

from __future__ import annotations

import shutil

import torch

from echo.export.exporter import export_checkpoint
from echo.runtime import DecodeOptions, Engine
from echo.training.deepen import deepen


def test_a_deeper_student_exports_and_serves_beside_its_teacher(tiny, tmp_path) -> None:
    depth = tiny.model.config.num_hidden_layers
    grown = deepen(tiny.model, depth + 1)
    with torch.no_grad():  # trained away from the identity: a model of its own
        grown.model.layers[-1].mlp.down_proj.weight.normal_(
            std=0.5, generator=torch.Generator().manual_seed(1)
        )
    student = tmp_path / "student"
    shutil.copytree(tiny.checkpoint, student)
    grown.save_pretrained(student)

    export_checkpoint(student, tmp_path / "export", redecode=tiny.checkpoint)
    engine = Engine.load(tmp_path / "export", warm_up=False)
    assert engine.redecoder is not None
    assert engine.redecoder.vision is engine.vision  # the teacher's tower, byte for byte: one session

    images = tiny.preprocessed(tiny.images(seed=4))
    got = engine.decode_processed(images[:2], DecodeOptions(decode="onestep"))
    assert got.tokens == tiny.torch_tokens(images[:2], "onestep", model=grown)
    assert got.tokens != tiny.torch_tokens(images[:2], "onestep")  # not the teacher's depth
    teacher = engine.redecoder.decode_processed(images[:2], DecodeOptions(decode="multistep"))
    assert teacher.tokens == tiny.torch_tokens(images[:2], "multistep")
