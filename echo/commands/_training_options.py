"""Options the training commands share, and the one place that turns them into argument objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError

Data = Annotated[Path, typer.Option("--data", help="manifest.jsonl (echo-train make-synthetic writes one)")]
Out = Annotated[
    Path, typer.Option("--out", help="output directory (checkpoints, metrics.json); resumes if it holds one")
]
Steps = Annotated[int, typer.Option(help="optimiser steps")]
BatchSize = Annotated[int, typer.Option(help="examples per step")]
Lr = Annotated[float, typer.Option(help="peak learning rate (cosine schedule with warm-up)")]
Seed = Annotated[int, typer.Option(help="random seed")]
ValEvery = Annotated[int, typer.Option(help="validate every N steps")]
CacheDir = Annotated[Path | None, typer.Option(help="cache of preprocessed images (default: OUT/../.cache)")]
TrainLimit = Annotated[int | None, typer.Option(help="use only the first N training examples")]
ValLimit = Annotated[int, typer.Option(help="validation examples")]
SelectBy = Annotated[
    str,
    typer.Option(
        help="which checkpoint out/best keeps: 'loss' (lowest validation loss) or 'f1' (highest "
        "positive-finding F1 of the reports it writes for the validation studies, decoded as served)"
    ),
]

Device = Annotated[
    str, typer.Option(help="where the model, the batches (and DCD's teacher) live: cpu, cuda or cuda:N")
]
Precision = Annotated[
    str, typer.Option(help="fp32, or bf16: autocast on the device (fp32 master weights unless LoRA)")
]
GradientCheckpointing = Annotated[
    bool,
    typer.Option(
        help="recompute decoder-layer and vision-block activations in the backward pass (less memory)"
    ),
]
LoraRank = Annotated[
    int,
    typer.Option(
        help="train LoRA adapters of this rank on the decoder (peft) instead of all weights; "
        "checkpoints are saved merged (0: full training)"
    ),
]
LoraAlpha = Annotated[float, typer.Option(help="LoRA alpha (0: 2 x rank)")]
LoraTargets = Annotated[
    str,
    typer.Option(
        help="decoder linear layers LoRA adapts: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    ),
]
StreamImages = Annotated[
    bool | None,
    typer.Option(
        "--stream-images/--hold-images",
        help="read training images from the memory-mapped cache per batch instead of holding them "
        "in RAM (default: stream when the set would take more than 2 GiB)",
    ),
]


def scale_options(params: dict) -> dict:
    """The LoopConfig fields of the scale options, taken from a command's parameters (its
    `locals()`: each training command declares Device, Precision, ... under these names)."""
    from echo.training.scale import parse_lora_targets

    names = ("device", "precision", "gradient_checkpointing", "lora_rank", "lora_alpha")
    return {
        **{name: params[name] for name in names},
        "lora_targets": parse_lora_targets(params["lora_targets"]),
    }


def best_text(metrics: dict) -> str:
    """'best validation loss 0.4123' or, with --select-by f1, 'best validation F1 0.6012'."""
    if metrics.get("select_by") == "f1":
        return f"best validation F1 {metrics['best_val_f1']:.4f}"
    return f"best validation loss {metrics['best_val_loss']:.4f}"


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def loop_config(*, steps: int, lr: float, seed: int, val_every: int, select_by: str, **more):
    """The stages' LoopConfig: checkpoints at every validation; `select_by` is checked here, early."""
    from echo.training.loop import LoopConfig

    return LoopConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        val_every=val_every,
        checkpoint_every=val_every,
        select_by=select_by,
        **more,
    )


def data_args(
    data: Path,
    out: Path,
    cache_dir: Path | None,
    *,
    train_limit: int | None,
    val_limit: int,
    max_response_tokens: int,
    stream_images: bool | None = None,
):
    """The stages' DataArgs; the image cache defaults to OUT/../.cache, shared by every stage's run."""
    from echo.training.stages import DataArgs

    return DataArgs(
        data,
        cache_dir if cache_dir is not None else out.resolve().parent / ".cache",
        train_limit=train_limit,
        val_limit=val_limit,
        max_response_tokens=max_response_tokens,
        stream_images=stream_images,
    )
