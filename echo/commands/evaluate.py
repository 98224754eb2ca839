"""`echo-train evaluate`: score a predictions file against a manifest and print the metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer


def command(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions JSONL from `echo-train predict`.")],
    data: Annotated[Path, typer.Option("--data", help="Manifest JSONL with id, report and labels.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as JSON instead of tables.")
    ] = False,
    no_semscore: Annotated[
        bool, typer.Option("--no-semscore", help="Skip SemScore-MiniLM (loading its model takes seconds).")
    ] = False,
    fluency: Annotated[
        bool,
        typer.Option(
            "--fluency",
            help="Also score fluency: the AR model's per-token NLL of each draft given its image "
            "(needs torch; reads the manifest's images).",
        ),
    ] = False,
    fluency_model: Annotated[
        Path | None,
        typer.Option("--fluency-model", help="The AR checkpoint for --fluency (default: the bundled one)."),
    ] = None,
) -> None:
    """Positive-finding F1 with precision and recall, false positives per normal study, ROUGE-L,
    BLEU-4, CIDEr-D, SemScore-MiniLM, repetition, adjacent duplicate words, both sections present,
    optionally fluency (AR NLL), and decoding speed."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from echo.metrics.evaluate import evaluate
    from echo.metrics.jsonl import read_jsonl
    from echo.metrics.table import render

    pred_rows = read_jsonl(pred, "predictions file")
    ref_rows = read_jsonl(data, "manifest")
    scorer = None
    if fluency or fluency_model is not None:
        from echo.training.fluency import BUNDLED_AR, ArFluency

        scorer = ArFluency(fluency_model or BUNDLED_AR, data)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:

        def stage(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        results = evaluate(pred_rows, ref_rows, with_semscore=not no_semscore, fluency=scorer, progress=stage)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        Console().print(render(results))
