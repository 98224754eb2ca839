"""`echo-train probe`: does a checkpoint's vision tower carry each finding? (`echo.training.vision_probe`)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def command(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint directory (torch)")],
    data: Annotated[Path, typer.Option(help="manifest.jsonl with labels")],
    fit_split: Annotated[
        str, typer.Option(help="the split the probes are fitted on ('all': every row)")
    ] = "train",
    eval_split: Annotated[str, typer.Option(help="the split they are scored on ('all': every row)")] = "val",
    fit_limit: Annotated[int | None, typer.Option(help="first N studies of the fit split only")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="first N studies of the eval split only")] = None,
    cells: Annotated[
        int, typer.Option(help="the image tokens' grid, and the pixels', average-pooled to N x N cells")
    ] = 4,
    pixels: Annotated[
        bool, typer.Option(help="also the baseline: the same probe on the input image's pixels")
    ] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="image cache (the training stages' cache)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON")] = False,
) -> None:
    """Per finding, ROC AUC of a logistic probe on the checkpoint's image tokens (pooled to a grid of
    cells), next to the same probe on the input pixels pooled alike: a finding the pixels carry and
    the tokens do not is lost in the vision tower, and no decoding or distillation can write it."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from echo.training.checkpoint import load_checkpoint
    from echo.training.stages import DataArgs, make_batchers
    from echo.training.vision_probe import finding_matrix, image_features, pixel_features, probe_scores

    model, tokenizer, spec = load_checkpoint(checkpoint)
    splits = [None if split == "all" else split for split in (fit_split, eval_split)]
    args = DataArgs(data, cache_dir, *splits, fit_limit, eval_limit)
    fit, held = make_batchers(model, tokenizer, spec, args, model.config.block_size)
    fit_y, eval_y = finding_matrix(fit.examples.labels), finding_matrix(held.examples.labels)
    fit_x, eval_x = (image_features(model, b, cells) for b in (fit, held))
    rows = {"tokens": probe_scores(fit_x, fit_y, eval_x, eval_y)}
    if pixels:
        fit_x, eval_x = (pixel_features(b.examples.images, cells) for b in (fit, held))
        rows["pixels"] = probe_scores(fit_x, fit_y, eval_x, eval_y)
    if as_json:
        typer.echo(json.dumps({name: [asdict(s) for s in scores] for name, scores in rows.items()}, indent=2))
        return
    table = Table(
        title=f"{checkpoint}: ROC AUC of a linear probe per finding, fitted on {fit_split} "
        f"({len(fit_y)} studies), scored on {eval_split} ({len(eval_y)}); {cells} x {cells} cells"
    )
    table.add_column("finding")
    for column in ("image tokens", *(["pixels"] if pixels else []), "positives fit / scored"):
        table.add_column(column, justify="right")
    for position, score in enumerate(rows["tokens"]):
        aucs = [rows[name][position].auc for name in rows]
        table.add_row(
            score.finding,
            *("n/a" if auc is None else f"{auc:.3f}" for auc in aucs),
            f"{score.train_positives} / {score.eval_positives}",
        )
    Console(width=120).print(table)
