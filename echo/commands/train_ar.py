"""`echo-train ar`: stage 1, next-token training of the vision-language model."""

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
    data: Data,
    out: Out,
    config: Annotated[
        Path | None, typer.Option(help="model config.json to start from random weights")
    ] = None,
    init: Annotated[Path | None, typer.Option(help="checkpoint directory to continue from")] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="directory with tokenizer.json (required with --config)")
    ] = None,
    steps: Steps = 2000,
    batch_size: BatchSize = 16,
    lr: Lr = 2e-3,
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
    max_response_tokens: Annotated[
        int, typer.Option(help="longest response kept (tokens, eos included)")
    ] = 192,
    findings_weight: Annotated[
        float,
        typer.Option(
            help="weight of the findings probe: an auxiliary loss on the pooled image tokens, "
            "targets read from each report by the labeler (0: plain next-token training)"
        ),
    ] = 0.0,
) -> None:
    """Train the autoregressive model (stage 1) from a config or a checkpoint."""
    import json

    from echo.model import EchoVLConfig, EchoVLM
    from echo.tokenizer import ReportTokenizer
    from echo.training.checkpoint import GenerationSpec, load_checkpoint
    from echo.training.loop import seed_everything
    from echo.training.scale import weights_dtype
    from echo.training.stages import StageArgs, run_ar

    check_positive(steps=steps, batch_size=batch_size, lr=lr, val_every=val_every)
    loop = loop_config(
        steps=steps,
        lr=lr,
        seed=seed,
        val_every=val_every,
        select_by=select_by,
        **scale_options(locals()),
    )
    if (config is None) == (init is None):
        raise UserError("give exactly one of --config (random start) or --init (a checkpoint)")
    seed_everything(seed)
    if init is not None:
        model, tok, spec = load_checkpoint(init, weights_dtype(loop, trains=True))
    else:
        if tokenizer is None:
            raise UserError("--config needs --tokenizer (train one with `echo-train tokenizer`)")
        if not config.is_file():
            raise UserError(f"config {config} does not exist")
        tok = ReportTokenizer.from_dir(tokenizer)
        try:
            model_config = EchoVLConfig.from_hf_dict(json.loads(config.read_text()))
        except json.JSONDecodeError as error:
            raise UserError(f"config {config} is not JSON: {error}") from None
        if model_config.vocab_size < tok.vocab_size:
            raise UserError(f"config vocab_size {model_config.vocab_size} < tokenizer size {tok.vocab_size}")
        model = EchoVLM(model_config)
        spec = GenerationSpec()
    args = StageArgs(
        out=out,
        data=data_args(
            data,
            out,
            cache_dir,
            train_limit=train_limit,
            val_limit=val_limit,
            max_response_tokens=max_response_tokens,
            stream_images=stream_images,
        ),
        loop=loop,
        batch_size=batch_size,
        block_size=int(model.config.block_size),
        findings_weight=findings_weight,
    )
    metrics = run_ar(model, tok, args, spec)
    typer.echo(f"AR: {metrics['steps']} steps, {best_text(metrics)} -> {out / 'best'}")
