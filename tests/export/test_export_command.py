"""`echo-train export`: the AR checkpoint to fp16 graphs, and every user error as one line, exit 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest

from echo.cli import main
from echo.errors import UserError
from echo.export import exporter
from echo.export.parity import DecoderCase, cpu_session, decoder_error, vision_error
from echo.export.random_tiny import make_random_checkpoint
from echo.runtime import Engine


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["echo-train", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code or 0


@pytest.fixture(scope="module")
def ar_fp16(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ar")
    checkpoint = make_random_checkpoint(root / "ar-checkpoint", "ar", seed=3, max_new_tokens=12)
    out = root / "ar-fp16"
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert (
            run_cli(
                monkeypatch, "export", "--checkpoint", checkpoint, "--out", out, "--fp16", "--name", "demo-ar"
            )
            == 0
        )
    return checkpoint, out


def test_the_ar_checkpoint_exports_to_float16(ar_fp16) -> None:
    _, out = ar_fp16
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["name"], manifest["dtype"]) == ("demo-ar", "float16")
    assert (manifest["generation"]["decode"], manifest["generation"]["stage"]) == ("ar", "ar")
    assert np.load(out / "embeddings.npy").dtype == np.float16
    decoder = onnx.load(str(out / "decoder.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in [*decoder.graph.input, *decoder.graph.output]}
    assert types["inputs_embeds"] == types["past_key_0"] == types["logits"] == onnx.TensorProto.FLOAT16
    assert types["top_probs"] == onnx.TensorProto.FLOAT  # the head works in float32, as torch does
    assert not list(out.parent.glob(".*exporting*"))


def test_float16_graphs_stay_close_to_the_float32_model(ar_fp16) -> None:
    from echo.training.checkpoint import load_checkpoint

    checkpoint, out = ar_fp16
    model, _, _ = load_checkpoint(checkpoint)
    assert vision_error(model, cpu_session(out / "vision.onnx"), [(1, 6, 8)], seed=31) < 2e-2
    assert decoder_error(model, cpu_session(out / "decoder.onnx"), DecoderCase(2, 9, 5), seed=32) < 2e-2


def test_the_engine_serves_the_float16_ar_model(ar_fp16) -> None:
    _, out = ar_fp16
    engine = Engine.load(out, warm_up=False)
    image = np.random.default_rng(33).random((200, 180)).astype(np.float32)
    report = engine.generate(image)
    assert report.decode == "ar" and report.tokens == report.forwards == 12
    assert engine.generate(image, decode="onestep").forwards == 2  # the same engine diffuses on request


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "{missing}", "--out", "{out}"], "--checkpoint {missing} is not a directory"),
        (["--checkpoint", "{ckpt}", "--out", "{out}", "--opset", "12"], "--opset must be between 17 and"),
        (
            ["--checkpoint", "{ckpt}", "--out", "{taken}"],
            "--out {taken} is not empty; pass --force to replace it",
        ),
        (["--checkpoint", "{ckpt}", "--out", "{file}"], "--out {file} exists and is not a directory"),
        (["--checkpoint", "{bare}", "--out", "{out}"], "{bare} has no tokenizer.json"),
        (
            ["--checkpoint", "{ckpt}", "--out", "{out}", "--external-data", "sometimes"],
            "--external-data must be one of auto, always, got 'sometimes'",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(ar_fp16, tmp_path, monkeypatch, capsys, args, message) -> None:
    checkpoint, _ = ar_fp16
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((checkpoint / "config.json").read_text())
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("an operator's file")
    (tmp_path / "file").write_text("x")
    names = {
        "missing": tmp_path / "missing",
        "ckpt": checkpoint,
        "out": tmp_path / "out",
        "taken": taken,
        "file": tmp_path / "file",
        "bare": bare,
    }
    code = run_cli(monkeypatch, "export", *(a.format(**names) for a in args))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"echo-train: error: {message.format(**names)}")
    assert "\n" not in err and "Traceback" not in err
    assert (taken / "keep.txt").read_text() == "an operator's file"
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_no_partial_directory(ar_fp16, tmp_path, monkeypatch) -> None:
    checkpoint, _ = ar_fp16

    def fail(*args, **kwargs):
        raise UserError("the exporter ran out of disk")

    monkeypatch.setattr(exporter, "export_vision", fail)
    previous = tmp_path / "model"
    previous.mkdir()
    (previous / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="ran out of disk"):
        exporter.export_checkpoint(checkpoint, previous, force=True)
    assert (previous / "manifest.json").read_text() == "{}"  # the old model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replacing_moves_the_new_directory_into_place(tmp_path) -> None:
    old, new = tmp_path / "model", tmp_path / ".model.exporting"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    exporter._move_into_place(new, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in old.iterdir()] == ["b"]
