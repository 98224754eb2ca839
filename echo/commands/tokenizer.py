"""`echo-train tokenizer`: train the report BPE on a manifest's reports and save tokenizer.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError

DEFAULT_VOCAB_SIZE = 2048


def reports_from_manifest(path: Path) -> list[str]:
    """The "report" text of every row; a row without one is an error, since training would skip it."""
    from echo.metrics.jsonl import read_jsonl

    rows = read_jsonl(path, "manifest")
    if not rows:
        raise UserError(f"manifest {path} has no rows")
    reports: list[str] = []
    for number, row in enumerate(rows, start=1):
        report = row.get("report")
        if not isinstance(report, str) or not report.strip():
            raise UserError(f'manifest {path} row {number} has no "report" text')
        reports.append(report)
    return reports


def command(
    data: Annotated[Path, typer.Option("--data", help="Manifest JSONL whose rows carry a 'report' field.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write tokenizer.json into.")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Target vocabulary size.")] = (
        DEFAULT_VOCAB_SIZE
    ),
    min_frequency: Annotated[
        int, typer.Option("--min-frequency", help="Fewest occurrences for a pair to be merged.")
    ] = 2,
) -> None:
    """Train a byte-level BPE (pad, eos, <|MASK|> and image specials at ids 0-5) on report texts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from echo.tokenizer import ReportTokenizer, check_training_options

    check_training_options(vocab_size, min_frequency)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    reports = reports_from_manifest(data)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training tokenizer", total=len(reports))

        def fed() -> Iterator[str]:
            for report in reports:
                progress.advance(task)
                yield report

        tokenizer = ReportTokenizer.train(fed(), vocab_size=vocab_size, min_frequency=min_frequency)
    file = tokenizer.save(out)
    console.print(f"wrote {file}: {len(tokenizer)} tokens from {len(reports)} reports")
