"""`echo-train init-from` on a transformers-written Qwen2.5-VL checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from echo.commands.init_from import init_from
from echo.errors import UserError
from echo.model import EchoVLM
from echo.model.checkpoint import read_weights
from echo.tokenizer import ReportTokenizer
from echo.training.checkpoint import GenerationSpec, load_checkpoint
from tests.qwen_format.conftest import BPE_VOCAB, EXTRA_ROWS, QWEN_SPECIALS, write_qwen_checkpoint

MASK_ID = BPE_VOCAB + len(QWEN_SPECIALS)  # appended after Qwen's specials
VOCAB = MASK_ID + EXTRA_ROWS  # the source's embedding rows: the mask needs no new one
PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Describe the findings and impression of this chest X-ray."
    "<|im_end|>\n<|im_start|>assistant\n"
)
EMBED = "model.embed_tokens.weight"


def test_the_source_is_in_the_released_format(qwen_source_dir: Path) -> None:
    names = sorted(p.name for p in qwen_source_dir.iterdir())
    assert "model.safetensors.index.json" in names and len([n for n in names if n.startswith("model-")]) > 1
    config = json.loads((qwen_source_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["text_config"]["vocab_size"] == VOCAB
    assert {t.dtype for t in read_weights(qwen_source_dir).values()} == {torch.bfloat16}
    assert ReportTokenizer.from_dir(qwen_source_dir).has_mask is False


def test_init_from_writes_a_checkpoint_our_stages_and_transformers_load(
    qwen_source_dir: Path, qwen_init_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    assert sorted(p.name for p in qwen_init_dir.iterdir()) == [
        "config.json",
        "echo_generation.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    model, tokenizer, spec = load_checkpoint(qwen_init_dir)
    assert (tokenizer.mask_id, model.config.mask_token_id, model.config.vocab_size) == (
        MASK_ID,
        MASK_ID,
        VOCAB,
    )
    assert (model.config.block_size, model.config.prompt_attention) == (8, "causal")
    assert model.config.preprocess["max_pixels"] == 2_250_000  # the source said 12,845,056
    assert spec == GenerationSpec(prompt=PROMPT)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        reference, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            qwen_init_dir, output_loading_info=True
        )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reference.dtype == torch.bfloat16
    hf_tokenizer = AutoTokenizer.from_pretrained(qwen_init_dir)
    assert hf_tokenizer.convert_tokens_to_ids("<|MASK|>") == MASK_ID
    assert json.loads((qwen_init_dir / "preprocessor_config.json").read_text())["max_pixels"] == 2_250_000


def test_the_mask_row_starts_as_the_mean_and_nothing_else_changes(
    qwen_source_dir: Path, qwen_init_dir: Path
) -> None:
    before, after = read_weights(qwen_source_dir), load_file(str(qwen_init_dir / "model.safetensors"))
    assert set(before) == set(after) and all(t.dtype == torch.bfloat16 for t in after.values())
    for name in (EMBED, "lm_head.weight"):
        mean = before[name].float().mean(dim=0).to(torch.bfloat16)
        assert torch.equal(after[name][MASK_ID], mean)
        keep = torch.ones(VOCAB, dtype=torch.bool)
        keep[MASK_ID] = False
        assert torch.equal(after[name][keep], before[name][keep])
    assert all(torch.equal(after[n], before[n]) for n in before if n not in (EMBED, "lm_head.weight"))


def test_init_from_its_own_output_writes_the_same_checkpoint(qwen_init_dir: Path, tmp_path: Path) -> None:
    again = init_from(qwen_init_dir, tmp_path / "again")
    assert (again.mask_token_id, again.mask_added, again.vocab_size) == (MASK_ID, False, VOCAB)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "echo_generation.json"):
        assert (tmp_path / "again" / name).read_text() == (qwen_init_dir / name).read_text(), name
    first, second = (
        load_file(str(qwen_init_dir / "model.safetensors")),
        load_file(str(tmp_path / "again" / "model.safetensors")),
    )
    assert set(first) == set(second) and all(torch.equal(first[n], second[n]) for n in first)


def test_a_full_embedding_grows_by_one_row_and_a_tied_head_stays_tied(tmp_path: Path) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    source = write_qwen_checkpoint(tmp_path / "source", tie=True, extra_rows=0)
    summary = init_from(source, tmp_path / "out")
    assert (summary.mask_token_id, summary.vocab_size, summary.mask_added) == (MASK_ID, MASK_ID + 1, True)
    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "lm_head.weight" not in stored  # tied: transformers leaves it out, and so do we
    old = read_weights(source)[EMBED]
    assert stored[EMBED].shape == (MASK_ID + 1, 64)
    assert torch.equal(stored[EMBED][:MASK_ID], old)
    assert torch.equal(stored[EMBED][MASK_ID], old.float().mean(dim=0).to(torch.bfloat16))
    ours = EchoVLM.from_pretrained(tmp_path / "out")
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    reference, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tmp_path / "out", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (
        reference.lm_head.weight.data_ptr() == reference.model.language_model.embed_tokens.weight.data_ptr()
    )


def test_options_set_block_size_attention_pixels_and_prompt(qwen_source_dir: Path, tmp_path: Path) -> None:
    init_from(
        qwen_source_dir,
        tmp_path / "out",
        block_size=4,
        prompt_attention="block_causal",
        max_pixels=1_000_000,
        prompt="Findings and impression?",
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["block_size"], config["prompt_attention"]) == (4, "block_causal")
    assert (config["preprocess"]["max_pixels"], config["preprocess"]["min_pixels"]) == (1_000_000, 3136)
    spec = GenerationSpec.load(tmp_path / "out")
    assert spec.prompt == PROMPT.replace(
        "Describe the findings and impression of this chest X-ray.", "Findings and impression?"
    )


def test_the_cli_registers_init_from(qwen_source_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from echo.cli import app

    result = CliRunner().invoke(
        app,
        [
            "init-from",
            "--checkpoint",
            str(qwen_source_dir),
            "--out",
            str(tmp_path / "out"),
            "--block-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        f"<|MASK|> added as id {MASK_ID}, vocabulary {VOCAB}, max_pixels 2250000, bfloat16" in result.output
    )


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_errors_name_what_is_wrong(qwen_source_dir: Path, qwen_init_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a Qwen2.5-VL checkpoint: it has no config.json"):
        init_from(tmp_path, tmp_path / "out")
    other = _copy(qwen_source_dir, tmp_path / "llama")
    _edit_json(other / "config.json", model_type="llama")
    with pytest.raises(
        UserError, match=r"llama is not a Qwen2.5-VL checkpoint: config.json has model_type 'llama'"
    ):
        init_from(other, tmp_path / "out")
    no_tokenizer = _copy(qwen_source_dir, tmp_path / "no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="has no tokenizer.json"):
        init_from(no_tokenizer, tmp_path / "out")
    text_only = _copy(qwen_source_dir, tmp_path / "text_only")
    _edit_json(
        text_only / "tokenizer_config.json",
        chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "<|im_end|>\n{% endfor %}",
    )
    with pytest.raises(UserError, match=r"renders 0 image blocks .* not a Qwen2.5-VL image-chat template"):
        init_from(text_only, tmp_path / "out")
    no_template = _copy(qwen_source_dir, tmp_path / "no_template")
    _edit_json(no_template / "tokenizer_config.json", chat_template=None)
    with pytest.raises(UserError, match="has no chat template"):
        init_from(no_template, tmp_path / "out")
    with pytest.raises(UserError, match="holds a checkpoint; choose a new directory"):
        init_from(qwen_source_dir, qwen_init_dir)
    with pytest.raises(UserError, match="--prompt-attention must be one of causal, block_causal"):
        init_from(qwen_source_dir, tmp_path / "out", prompt_attention="full")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_flat_config_as_released_gives_the_same_checkpoint(
    qwen_source_dir: Path, qwen_init_dir: Path, tmp_path: Path
) -> None:
    """Qwen2.5-VL-7B-Instruct's config.json has its text fields at the top level, the rope as
    rope_theta + rope_scaling {"type": "mrope"}, and the vision tower's in_chans / spatial_patch_size."""
    flat = _copy(qwen_source_dir, tmp_path / "flat")
    config = json.loads((flat / "config.json").read_text())
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    text.pop("model_type", None)
    config.update(text)
    config.update(
        rope_theta=rope["rope_theta"], rope_scaling={"type": "mrope", "mrope_section": rope["mrope_section"]}
    )
    vision = config["vision_config"]
    vision["in_chans"] = vision.pop("in_channels")
    vision["spatial_patch_size"] = vision["patch_size"]
    (flat / "config.json").write_text(json.dumps(config))
    init_from(flat, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == (qwen_init_dir / "config.json").read_text()


def test_a_diffusion_stage_on_the_plain_source_asks_for_init_from(
    qwen_source_dir: Path, tmp_path: Path
) -> None:
    from echo.training.stages import DataArgs, StageArgs, run_rad

    model, tokenizer, spec = load_checkpoint(qwen_source_dir)  # the AR stage's start: loads
    args = StageArgs(out=tmp_path / "rad", data=DataArgs(manifest=tmp_path / "manifest.jsonl"))
    with pytest.raises(UserError, match=r"has no <\|MASK\|> token .*: run `echo-train init-from` to add it"):
        run_rad(model, tokenizer, args, spec)
