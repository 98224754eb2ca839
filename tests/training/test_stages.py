"""The stages as the commands run them: a few steps on a handful of generated studies."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from echo.cli import app
from echo.data.preprocess import PreprocessConfig
from echo.data.synthetic import generate_dataset
from echo.errors import UserError
from echo.model import EchoVLConfig, EchoVLM
from echo.tokenizer import ReportTokenizer
from echo.training.checkpoint import GenerationSpec, load_checkpoint, save_checkpoint
from echo.training.loop import LoopConfig
from echo.training.stages import DataArgs, StageArgs, run_ar

SIDE = 56

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(32, seed=3, out_dir=root, size=96, workers=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    tokenizer = ReportTokenizer.train([r["report"] for r in rows], vocab_size=400, min_frequency=1)
    tokenizer.save(root / "tokenizer")
    return manifest, tokenizer


def _model(tokenizer: ReportTokenizer) -> EchoVLM:
    torch.manual_seed(0)
    preprocess = PreprocessConfig(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE).to_dict()
    return EchoVLM(EchoVLConfig.tiny(vocab_size=tokenizer.vocab_size, block_size=4, preprocess=preprocess))


def _args(out, manifest, steps: int) -> StageArgs:
    return StageArgs(
        out=out,
        data=DataArgs(manifest, out.parent / ".cache", train_split=None, val_split=None, val_limit=16),
        loop=LoopConfig(steps=steps, lr=3e-3, warmup_steps=5, val_every=steps, checkpoint_every=steps),
        batch_size=8,
        block_size=4,
    )


def test_a_short_ar_run_lowers_validation_loss_and_resumes(dataset, tmp_path):
    manifest, tokenizer = dataset
    model = _model(tokenizer)
    spec = GenerationSpec(max_new_tokens=64)
    args = _args(tmp_path / "ar", manifest, steps=30)
    from echo.training.batches import Batcher
    from echo.training.examples import load_examples
    from echo.training.objectives import ar_loss

    examples = load_examples(manifest, None, PreprocessConfig.from_dict(model.config.preprocess), limit=16)
    val = Batcher(
        examples, tokenizer, spec.prompt, PreprocessConfig.from_dict(model.config.preprocess), 4, 192
    )
    with torch.no_grad():
        batches = val.ordered(16, tokenizer.pad_id)
        before = sum(float(ar_loss(model.eval(), b)) * b.size for b in batches) / 16
    metrics = run_ar(model, tokenizer, args, spec)
    assert metrics["steps"] == 30 and not metrics["resumed"]
    assert metrics["best_val_loss"] < 0.7 * before
    best, _, saved_spec = load_checkpoint(tmp_path / "ar" / "best")
    assert saved_spec.stage == "ar" and saved_spec.max_new_tokens == 64
    assert (tmp_path / "ar" / "metrics.json").is_file()
    assert metrics["peak_rss_mib"] > 0 and metrics["peak_cuda_mib"] is None

    # Interrupted runs resume from out/last: asking for more steps continues where it stopped.
    again = run_ar(_model(tokenizer), tokenizer, _args(tmp_path / "ar", manifest, steps=40), spec)
    assert again["resumed"] and again["steps"] == 40


def test_ar_with_the_findings_probe_trains_both_and_saves_a_plain_checkpoint(dataset, tmp_path):
    from echo.model.checkpoint import read_weights
    from echo.training.findings_probe import PROBE_FILE

    manifest, tokenizer = dataset
    args = _args(tmp_path / "ar", manifest, steps=12)
    args.findings_weight = 0.5
    metrics = run_ar(_model(tokenizer), tokenizer, args, GenerationSpec(max_new_tokens=32))
    assert metrics["findings_weight"] == 0.5 and metrics["steps"] == 12
    last = tmp_path / "ar" / "last"
    assert (last / PROBE_FILE).is_file()
    assert not any(name.startswith("probe") for name in read_weights(last))  # a plain Qwen2.5-VL directory
    load_checkpoint(last)
    again = _args(tmp_path / "ar", manifest, steps=16)
    again.findings_weight = 0.5
    assert run_ar(_model(tokenizer), tokenizer, again, GenerationSpec(max_new_tokens=32))["resumed"]

    args.findings_weight = -1.0
    with pytest.raises(UserError, match="findings-weight"):
        run_ar(_model(tokenizer), tokenizer, args, GenerationSpec())


def test_commands_chain_ar_rad_dcd_predict_evaluate(dataset, tmp_path):
    manifest, tokenizer = dataset
    model = _model(tokenizer)
    save_checkpoint(model, tokenizer, GenerationSpec(max_new_tokens=48), tmp_path / "init")
    runner = CliRunner()
    common = ["--data", str(manifest), "--batch-size", "4", "--val-every", "4", "--val-limit", "8"]

    def run(*argv: str) -> None:
        result = runner.invoke(app, list(argv), catch_exceptions=False)
        assert result.exit_code == 0, result.output

    run("ar", "--init", str(tmp_path / "init"), "--out", str(tmp_path / "ar"), "--steps", "4", *common)
    run(
        "rad",
        "--init",
        str(tmp_path / "ar" / "best"),
        "--out",
        str(tmp_path / "rad"),
        "--steps",
        "4",
        "--block-size",
        "4",
        *common,
    )
    teacher, _, teacher_spec = load_checkpoint(tmp_path / "rad" / "best")
    assert teacher.config.block_size == 4 and teacher_spec.decode == "multistep"
    # An untrained teacher never ends a report: DCD says so in one line instead of training on nothing.
    dcd = ["dcd", "--teacher", str(tmp_path / "rad" / "best"), "--out", str(tmp_path / "dcd")]
    result = runner.invoke(app, [*dcd, "--steps", "2", "--rounds", "1", "--collect-per-round", "4", *common])
    assert result.exit_code != 0 and "no usable trajectory" in str(result.exception)
    run(
        "predict",
        "--model",
        str(tmp_path / "rad" / "best"),
        "--decode",
        "onestep",
        "--data",
        str(manifest),
        "--out",
        str(tmp_path / "pred.jsonl"),
        "--split",
        "all",
        "--limit",
        "3",
    )
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["forwards"] >= 1 and r["tokens"] >= 0 for r in rows)
    run(
        "evaluate", "--pred", str(tmp_path / "pred.jsonl"), "--data", str(manifest), "--no-semscore", "--json"
    )


def test_bad_inputs_are_one_line_errors(dataset, tmp_path):
    manifest, _ = dataset
    runner = CliRunner()
    result = runner.invoke(app, ["ar", "--data", str(manifest), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "exactly one of --config" in str(result.exception or result.output)
    result = runner.invoke(
        app,
        ["rad", "--init", str(tmp_path / "nowhere"), "--data", str(manifest), "--out", str(tmp_path / "o")],
    )
    assert "not a checkpoint directory" in str(result.exception or result.output)
    result = runner.invoke(
        app,
        [
            "rad",
            "--init",
            str(tmp_path),
            "--data",
            str(manifest),
            "--out",
            str(tmp_path / "o"),
            "--block-size",
            "5",
        ],
    )
    assert "must be 4 or 8" in str(result.exception or result.output)
    result = runner.invoke(
        app,
        [
            "ar",
            "--init",
            str(tmp_path),
            "--data",
            str(manifest),
            "--out",
            str(tmp_path / "o"),
            "--select-by",
            "bleu",
        ],
    )
    assert "--select-by must be one of loss, f1" in str(result.exception or result.output)


def test_dcd_rounds_distil_a_teacher_that_ends_its_reports(dataset, tmp_path):
    """A teacher biased towards eos ends every trajectory: rounds collect, align and checkpoint."""
    from echo.training.dcd_stage import DcdArgs, run_dcd

    manifest, tokenizer = dataset
    teacher, student = _model(tokenizer), _model(tokenizer)
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = 6.0  # eos wins often but not always: trajectories of a few blocks
    teacher.lm_head.register_forward_hook(lambda _m, _i, out: out + bias)
    args = DcdArgs(
        out=tmp_path / "dcd",
        data=DataArgs(manifest, tmp_path / ".cache", train_split=None, val_split=None, val_limit=8),
        loop=LoopConfig(steps=4, lr=1e-3, warmup_steps=1, val_every=2, checkpoint_every=2, select_by="f1"),
        rounds=2,
        collect_per_round=8,
        collect_batch_size=8,
        val_collect=8,
        batch_size=4,
    )
    metrics = run_dcd(teacher, student, tokenizer, args, GenerationSpec(max_new_tokens=16))
    assert [r["round"] for r in metrics["rounds"]] == [1, 2] and metrics["steps"] == 4
    assert all(r["kept"] + r["no_eos"] + r["repetition"] == 8 for r in metrics["rounds"])
    _, _, spec = load_checkpoint(tmp_path / "dcd" / "last")
    assert spec.stage == "dcd" and spec.decode == "onestep"
    # --select-by f1: every validation decoded the student's reports and scored them.
    assert metrics["select_by"] == "f1" and [h["step"] for h in metrics["history"]] == [2, 4]
    assert all(0.0 <= h["val_f1"] <= 1.0 for h in metrics["history"])
    assert metrics["best_val_f1"] == max(h["val_f1"] for h in metrics["history"])
    assert (tmp_path / "dcd" / "best" / "config.json").is_file()
    # The target store is O(K) per position: K = 16 by default, fp16 probs + int32 ids + fp32 rest.
    assert metrics["target_top_k"] == 16 and metrics["peak_rss_mib"] > 0
    assert all(r["store_bytes"] % (16 * 6 + 4 + 8 + 1 + 8) == 0 for r in metrics["rounds"])


def test_rad_command_with_the_scale_options_saves_a_plain_checkpoint(dataset, tmp_path):
    """LoRA + bf16 + gradient checkpointing + streamed images through the command line; the
    checkpoint is the merged model, and a second run resumes from out/last."""
    manifest, tokenizer = dataset
    save_checkpoint(_model(tokenizer), tokenizer, GenerationSpec(max_new_tokens=48), tmp_path / "init")
    argv = ["rad", "--init", str(tmp_path / "init"), "--data", str(manifest), "--out", str(tmp_path / "rad")]
    argv += ["--batch-size", "4", "--val-every", "2", "--val-limit", "4", "--block-size", "4"]
    argv += ["--lora-rank", "2", "--lora-targets", "q_proj,v_proj,down_proj", "--precision", "bf16"]
    argv += ["--gradient-checkpointing", "--stream-images"]
    runner = CliRunner()
    result = runner.invoke(app, [*argv, "--steps", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rad" / "metrics.json").read_text())
    assert metrics["lora_trainable_parameters"] > 0 and metrics["peak_rss_mib"] > 0
    model, _, spec = load_checkpoint(tmp_path / "rad" / "best")  # strict loading: plain names
    assert spec.stage == "rad" and not any("lora" in name for name in model.state_dict())
    assert list((tmp_path / ".cache").glob("*.u8"))  # the images came from the memory-mapped cache
    result = runner.invoke(app, [*argv, "--steps", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rad" / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["steps"] == 4
