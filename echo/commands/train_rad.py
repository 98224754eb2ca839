"""`echo-train rad`: stage 2, Response-Asymmetric Diffusion adaptation of an AR checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echo.commands._training_options import (
    BatchSize,
    CacheDir,
    Data,
    Device,
    GradientCheckpointing,
    LoraAlpha,
    LoraRank,
    LoraTargets,
    Lr,
    Out,
    Precision,
    Seed,
    SelectBy,
    Steps,
    StreamImages,
    TrainLimit,
    ValEvery,
    ValLimit,
    best_text,
    check_positive,
    data_args,
    loop_config,
    scale_options,
)
from echo.errors import UserError


def command(
    init: Annotated[Path, typer.Option(help="the AR checkpoint directory (stage 1's best/)")],
    data: Data,
    out: Out,
    block_size: Annotated[int, typer.Option(help="tokens per block, B (4 and 8 are supported)")] = 8,
    duplicate: Annotated[
        str, typer.Option(help="'response' (RAD) or 'full' (prior conversion, to measure)")
    ] = "response",
    train_vision: Annotated[bool, typer.Option(help="also train the vision tower and projector")] = False,
    steps: Steps = 2000,
    batch_size: BatchSize = 16,
    lr: Lr = 1e-3,
    seed: Seed = 0,
    val_every: ValEvery = 250,
    train_limit: TrainLimit = None,
    val_limit: ValLimit = 256,
    cache_dir: CacheDir = None,
    select_by: SelectBy = "loss",
    device: Device = "cpu",
    precision: Precision = "fp32",
    gradient_checkpointing: GradientCheckpointing = False,
    lora_rank: LoraRank = 0,
    lora_alpha: LoraAlpha = 0.0,
    lora_targets: LoraTargets = "q_proj,k_proj,v_proj,o_proj",
    stream_images: StreamImages = None,
) -> None:
    """Turn the AR model into a block-diffusion teacher (rows: context, x_t, x_0; only the response duplicated)."""
    from echo.training.checkpoint import load_checkpoint
    from echo.training.scale import weights_dtype
    from echo.training.stages import StageArgs, run_rad

    check_positive(steps=steps, batch_size=batch_size, lr=lr, val_every=val_every, block_size=block_size)
    loop = loop_config(
        steps=steps,
        lr=lr,
        seed=seed,
        val_every=val_every,
        select_by=select_by,
        **scale_options(locals()),
    )
    if block_size not in (4, 8):
        raise UserError(f"--block-size must be 4 or 8, got {block_size}")
    model, tokenizer, spec = load_checkpoint(init, weights_dtype(loop, trains=True))
    args = StageArgs(
        out=out,
        data=data_args(
            data,
            out,
            cache_dir,
            train_limit=train_limit,
            val_limit=val_limit,
            max_response_tokens=spec.max_new_tokens,
            stream_images=stream_images,
        ),
        loop=loop,
        batch_size=batch_size,
        block_size=block_size,
        freeze_vision=not train_vision,
        duplicate=duplicate,
    )
    metrics = run_rad(model, tokenizer, args, spec)
    typer.echo(f"RAD: {metrics['steps']} steps, {best_text(metrics)} -> {out / 'best'}")
