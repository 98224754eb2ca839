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
):
    """The stages' DataArgs; the image cache defaults to OUT/../.cache, shared by every stage's run."""
    from echo.training.stages import DataArgs

    return DataArgs(
        data,
        cache_dir if cache_dir is not None else out.resolve().parent / ".cache",
        train_limit=train_limit,
        val_limit=val_limit,
        max_response_tokens=max_response_tokens,
    )
