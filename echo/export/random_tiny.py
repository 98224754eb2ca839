"""Random-weight checkpoints in the real format, for tests and `benchmarks/decode_speed.py
--random-tiny` before trained models exist. Their reports are noise: they measure plumbing and
speed, never quality.

Roles mirror the pipeline's three checkpoints: "ar" (stage 1, decode ar), "teacher" (RAD, decode
multistep) and "student" (DCD, decode onestep); only the generation spec tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import torch

from echo.data.reports import write_report
from echo.data.streams import component_rng
from echo.data.synthetic import study_case
from echo.model.config import EchoVLConfig
from echo.model.vision_config import VisionConfig, default_preprocess
from echo.model.vlm import EchoVLM
from echo.report import format_report
from echo.tokenizer import ReportTokenizer
from echo.training.checkpoint import GenerationSpec, save_checkpoint

ROLES: dict[str, tuple[str, str]] = {
    "ar": ("ar", "ar"),
    "teacher": ("rad", "multistep"),
    "student": ("dcd", "onestep"),
}
SIZES: tuple[str, ...] = ("tiny", "small", "0.5b")
QWEN_VOCAB = 151_936  # Qwen2.5's embedding rows (the tokenizer's 151,665 ids, padded)


def synthetic_reports(count: int, seed: int = 0) -> list[str]:
    """Report texts of the synthetic benchmark's first `count` studies (no images drawn)."""
    texts = []
    for index in range(count):
        text = write_report(study_case(seed, index), component_rng(seed, index, "report"))
        texts.append(format_report(text.findings, text.impression))
    return texts


def random_config(vocab_size: int, size: str = "tiny", prompt_attention: str = "causal") -> EchoVLConfig:
    """ "tiny": EchoVLConfig.tiny (2 + 2 layers, width 64), images of at most 112 x 168 pixels
    (<= 24 image tokens). "small": 4 + 4 layers, width 256, images of at most 224 x 224 pixels.
    initializer_range 0.4 makes random predictions peaked, so greedy outputs vary.
    "0.5b": Qwen2.5-0.5B's decoder (24 layers, width 896, 14 heads / 2 KV heads, MLP 4864, vocab
    151,936; ~0.63B parameters with an untied head) behind the small vision tower, images of at
    most 448 x 448 pixels, Qwen's initializer_range 0.02 (24 layers at 0.4 would overflow float16);
    `vocab_size` only has to fit in its vocabulary."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if size == "0.5b":
        if vocab_size > QWEN_VOCAB:
            raise ValueError(f"a vocabulary of {vocab_size} does not fit the 0.5b preset's {QWEN_VOCAB}")
        base = EchoVLConfig.tiny(
            vocab_size=QWEN_VOCAB,
            prompt_attention=prompt_attention,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            mrope_section=(8, 12, 12),  # head_dim 64: Qwen2.5-VL's (16, 24, 24) halved
            rope_theta=1_000_000.0,
            vision=_small_vision(out_hidden_size=896),
        )
        max_pixels = 448 * 448
    elif size == "tiny":
        base = EchoVLConfig.tiny(
            vocab_size=vocab_size, initializer_range=0.4, prompt_attention=prompt_attention
        )
        max_pixels = 112 * 168
    else:
        base = EchoVLConfig.tiny(
            vocab_size=vocab_size,
            initializer_range=0.4,
            prompt_attention=prompt_attention,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=(8, 12, 12),
            vision=_small_vision(out_hidden_size=256),
        )
        max_pixels = 224 * 224
    preprocess = {**default_preprocess(base.vision), "min_pixels": 56 * 56, "max_pixels": max_pixels}
    return base.with_changes(preprocess=preprocess)


def _small_vision(out_hidden_size: int) -> VisionConfig:
    """4 blocks of width 128, Qwen2.5-VL's window (112 pixels) with the last block full."""
    return VisionConfig(
        depth=4,
        hidden_size=128,
        intermediate_size=256,
        num_heads=4,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=(3,),
        out_hidden_size=out_hidden_size,
    )


def make_random_checkpoint(
    out: Path,
    role: str = "student",
    *,
    seed: int = 0,
    size: str = "tiny",
    prompt_attention: str = "causal",
    max_new_tokens: int = 32,
    never_stop: bool = False,
    tokenizer: ReportTokenizer | None = None,
) -> Path:
    """Write a random checkpoint directory (config.json, model.safetensors, tokenizer.json,
    echo_generation.json). `never_stop` zeroes eos's output row, so eos never wins the argmax and
    every report runs to max_new_tokens (comparable lengths for speed measurements)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if tokenizer is None:
        tokenizer = ReportTokenizer.train(synthetic_reports(40), vocab_size=320, min_frequency=2)
    config = random_config(tokenizer.vocab_size, size, prompt_attention)
    torch.manual_seed(seed)
    model = EchoVLM(config).eval()
    if never_stop:
        with torch.no_grad():
            model.lm_head.weight[config.eos_token_id] = 0.0
    stage, decode = ROLES[role]
    spec = GenerationSpec(stage=stage, decode=decode, max_new_tokens=max_new_tokens, threshold=0.85)
    save_checkpoint(model, tokenizer, spec, out)
    return out


def exported_random_model(root: Path, role: str = "student", max_new_tokens: int = 24) -> tuple[Path, Path]:
    """(checkpoint, export) of a tiny random model under `root`, made once: a later call with
    the same root reuses them (the tests of several folders share one export per session)."""
    from echo.export.exporter import export_checkpoint
    from echo.runtime.manifest import MANIFEST_NAME

    checkpoint, export = root / f"{role}-checkpoint", root / f"{role}-onnx"
    if not (export / MANIFEST_NAME).is_file():
        make_random_checkpoint(checkpoint, role, max_new_tokens=max_new_tokens)
        export_checkpoint(checkpoint, export, force=True)
    return checkpoint, export
